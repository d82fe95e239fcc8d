"""How an option is offered to users: the metadata each :class:`~weightspectra.options.Options`
field declares (its help, kind and flag) and the :class:`OptionSpec` the CLI builds a flag from."""

from __future__ import annotations

from dataclasses import Field, dataclass
from enum import Enum
from typing import Any

__all__ = ["DIAG", "OptionSpec", "meta", "spec_of"]


@dataclass(frozen=True)
class OptionSpec:
    """How one option is shown to users (the CLI flag and its help).

    Attributes
    ----------
    name : str
        Field name of :class:`Options`.
    help : str
        One-line help.
    kind : str
        ``"bool"``, ``"int"``, ``"float"``, ``"str"``, ``"enum"`` or ``"selector"`` (a list of
        layer ids, types or name patterns).
    flag : str
        Command-line flag (``--no-...`` for a switch that is on by default).
    default : object
        The default value.
    choices : tuple of str
        Valid values of an enum option.
    describe : bool
        Also offered by ``weightspectra describe`` (options that change the plan).
    group : str
        The group it is listed in by ``--help``.
    """

    name: str
    help: str
    kind: str
    flag: str
    default: Any
    choices: tuple[str, ...] = ()
    describe: bool = False
    group: str = "analysis"


#: Group of the random-matrix diagnostics' options (shown apart in ``--help``).
DIAG = "random-matrix diagnostics (docs/diagnostics.md)"


def meta(
    help: str,
    *,
    kind: str,
    flag: str = "",
    enum: type[Enum] | None = None,
    describe: bool = False,
    group: str = "analysis",
) -> dict[str, Any]:
    """The metadata of an :class:`Options` field: its help and how the CLI offers it."""
    return {
        "help": help,
        "kind": kind,
        "flag": flag,
        "enum": enum,
        "describe": describe,
        "group": group,
    }


def spec_of(f: Field[Any]) -> OptionSpec:
    """How the field ``f`` of :class:`~weightspectra.options.Options` is offered."""
    data = f.metadata
    default = f.default
    flag = data["flag"] or ("--no-" if default is True else "--") + f.name.replace("_", "-")
    enum = data.get("enum")
    return OptionSpec(
        name=f.name,
        help=data["help"],
        kind=data["kind"],
        flag=flag,
        default=default.value if isinstance(default, Enum) else default,
        choices=tuple(str(m.value) for m in enum) if enum is not None else (),
        describe=data["describe"],
        group=data["group"],
    )
