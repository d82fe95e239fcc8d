"""Griffe extension for the docs build: Sphinx cross-reference roles become links.

The numpydoc docstrings name other objects the Sphinx way (``:class:`Report```,
``:func:`~weightspectra.fitting.powerlaw.fit_power_law```). mkdocstrings does not read those
roles, so left alone they show up verbatim on the API pages. This extension rewrites each role,
once the whole package is loaded, into an optional mkdocs-autorefs reference:

- the target is resolved in the scope of the object whose docstring holds it (so a bare
  ``Report`` inside ``weightspectra.compare`` finds ``weightspectra.report.results.Report``);
- the text shown is the target as written, or only its last part after a leading ``~``;
- "optional" means that a target which is not on any page (a private helper, a pandas class)
  renders as plain code instead of failing the strict build.

mkdocs.yml loads it through the Python handler's ``extensions`` option.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`(?P<target>[^`]+)`")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` seen from ``obj``, or ``target`` itself when unknown."""
    try:
        # An absolute path, possibly through a re-export (``weightspectra.Options.to_dict``).
        found = obj.modules_collection[target]
        return str(found.final_target.path if isinstance(found, griffe.Alias) else found.path)
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        pass
    scopes: list[griffe.Object] = [obj]
    if obj.parent is not None:
        scopes.append(obj.parent)
    for scope in scopes:
        try:
            return scope.resolve(target)
        except (griffe.NameResolutionError, AttributeError):
            pass
        # A dotted relative name such as ``Report.to_json``: resolve its head, keep the tail.
        head, _, tail = target.partition(".")
        if tail:
            try:
                return f"{scope.resolve(head)}.{tail}"
            except (griffe.NameResolutionError, AttributeError):
                pass
    return target


def _rewrite(obj: griffe.Object, text: str) -> str:
    def one(match: re.Match[str]) -> str:
        written = match["target"].strip()
        short = written.startswith("~")
        target = written.lstrip("~").removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if short else target
        if written.endswith("()"):
            shown += "()"
        identifier = html.escape(_resolve(obj, target), quote=True)
        code = f"<code>{html.escape(shown)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return _ROLE.sub(one, text)


def _walk(obj: griffe.Object | griffe.Alias, seen: set[str]) -> None:
    if isinstance(obj, griffe.Alias) or obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = _rewrite(obj, obj.docstring.value)
    for member in obj.members.values():
        _walk(member, seen)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())
