"""The peer's keyword arguments, mapped onto :class:`weightspectra.options.Options`.

Every option of the peer's ``analyze()`` is either mapped, handled by the facade, accepted at
the peer's own default (so a call that spells the defaults out runs), or refused with one line
naming the alternative. Messages never show a model's repr: values are shown by type unless
they are plain numbers, strings or None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from weightspectra.errors import OptionError

#: Peer options mapped onto weightspectra options (peer name → our name).
MAPPED = {
    "min_evals": "min_evals",
    "max_evals": "max_evals",
    "pool": "pool",
    "conv2d_norm": "conv_scaling",
    "normalize": "normalize",
    "min_size": "min_evals",  # ignored by the peer ("changed to min_evals"); an alias here
    "max_size": "max_evals",
}
#: Peer options handled by the facade itself.
HANDLED = (
    "layers",
    "max_N",
    "plot",
    "savefig",
    "fit",
    "svd_method",
    "model",
    "base_model",
    "peft",
    "fix_fingers",
    "max_fingers",
)
#: Peer options passed through to the diagnostics of the same meaning.
PASS_THROUGH = {"mp_fit": "mp_fit", "randomize": "randomize", "detX": "detx", "ERG": "detx"}
#: Peer options not run here, accepted at their default value(s) only, with what to do instead.
DEFAULT_ONLY: dict[str, tuple[tuple[object, ...], str]] = {
    "glorot_fix": ((False,), "weightspectra does not rescale weights; analyse them as they are"),
    "ww2x": ((False,), "deprecated in the peer too; pool=False gives per-slice rows"),
    "conv2d_fft": ((False,), "not implemented; analyse the convolution's slices (pool=False)"),
    "fft": ((False,), "not implemented; analyse the convolution's slices (pool=False)"),
    "deltas": ((False,), "use plot=True: the layer plots include the ESD and its fit"),
    "intra": ((False,), "not implemented; analyse each layer (the default)"),
    "vectors": ((False,), "call vector_metrics(vectors) instead"),
    "channels": ((None,), "channel order is read from the framework's own layout"),
    "stacked": ((False,), "not implemented; analyse each layer (the default)"),
    "xmax": ((None, "force"), "the tail ends at λ_max; fix_fingers='clip_xmax' drops outliers"),
    "start_ids": ((0, 1), "layer ids follow the peer's numbering of the input form"),
    "sparsify": ((True,), "the full ESD is always used"),
    "tolerance": ((None, 1e-6), "weak_rank_loss uses the peer's 1e-6 on the eigenvalues"),
    "pl_package": ((None, "powerlaw", "ww"), "weightspectra's own fitter is used"),
    "xmin_max": ((None,), "the xmin scan covers the whole ESD"),
    "finger_thresh": ((1.0,), "weightspectra's finger fix uses fingers_alpha_drop"),
    "inverse": ((False,), "not implemented"),
    "evecs": ((False,), "not implemented"),
    "params": ((None,), "pass the options as keyword arguments"),
}
FITS = {"PL": "PL", "POWER_LAW": "PL", "power_law": "PL", "pl": "PL", "TPL": "TPL", "E_TPL": "TPL"}
SVD_METHODS = ("full", "accurate", "fast", "FULL", "ACCURATE", "FAST")
FINGERS = (None, False, "clip_xmax")
PEFT = (False, None, True, "peft", "peft_only", "with_base")


def shown(value: object) -> str:
    """A value for a one-line message: its repr if it is a plain scalar, else its type."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    plain = (bool, int, float, str)
    if (
        isinstance(value, (list, tuple))
        and len(value) <= 8
        and all(v is None or isinstance(v, plain) for v in value)
    ):
        return repr(value)
    return f"a {type(value).__name__}"


def _is(value: object, choices: tuple[object, ...]) -> bool:
    for choice in choices:
        if value is choice:
            return True
        if isinstance(value, float) and isinstance(choice, float):
            if math.isclose(value, choice, rel_tol=1e-12):
                return True
        elif type(value) is type(choice) and value == choice:
            return True
    return False


def supported() -> str:
    """The peer options the facade runs, for messages."""
    return ", ".join(sorted({*MAPPED, *HANDLED, *PASS_THROUGH}))


@dataclass(frozen=True)
class PeerCall:
    """One peer-style call, translated: our option values and the facade's own."""

    ours: Mapping[str, Any] = field(default_factory=dict)
    handled: Mapping[str, Any] = field(default_factory=dict)


def translate(kwargs: Mapping[str, Any]) -> PeerCall:
    """Our options from the peer's keyword arguments.

    Raises
    ------
    OptionError
        One line: the option, its value (or type), and the alternative.
    """
    ours: dict[str, Any] = {}
    handled: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in MAPPED:
            if value is not None or key == "max_evals":
                if key == "max_size" and value is None:
                    continue
                ours[MAPPED[key]] = value
        elif key in HANDLED:
            handled[key] = value
        elif key in PASS_THROUGH:
            handled[key] = bool(value)
            if value or key != "ERG":
                ours[PASS_THROUGH[key]] = bool(value)
        elif key in DEFAULT_ONLY:
            defaults, instead = DEFAULT_ONLY[key]
            if not _is(value, defaults):
                raise OptionError(
                    f"{key}={shown(value)} is not run by weightspectra.compat (only its default "
                    f"{defaults[0]!r}): {instead}"
                )
        else:
            raise OptionError(
                f"unknown option {key}={shown(value)}; supported options: {supported()}"
            )
    fit = handled.get("fit", "PL")
    if not isinstance(fit, str) or fit not in FITS:
        raise OptionError(f"fit={shown(fit)}: choose 'PL', 'TPL' or 'E_TPL'")
    if FITS[fit] == "TPL":
        ours["compare_fits"] = True  # fits the truncated power law beside the power law
    svd = handled.get("svd_method", "full")
    if svd not in SVD_METHODS:
        raise OptionError(
            f"svd_method={shown(svd)}: choose 'fast' or 'accurate' (both give the exact "
            "float64 eigenvalues here)"
        )
    fingers = handled.get("fix_fingers")
    if fingers == "xmin_peak":
        raise OptionError(
            "fix_fingers='xmin_peak' is not reproduced (it mixes log and linear units in the "
            "peer); use fix_fingers='clip_xmax', weightspectra's finger fix"
        )
    if not _is(fingers, FINGERS):
        raise OptionError(f"fix_fingers={shown(fingers)}: choose None or 'clip_xmax'")
    if fingers == "clip_xmax":
        ours["fingers"] = True
        if handled.get("max_fingers") is not None:
            ours["max_fingers"] = handled["max_fingers"]
    peft = handled.get("peft", False)
    if not _is(peft, PEFT):
        raise OptionError(f"peft={shown(peft)}: choose False, True or 'with_base'")
    return PeerCall(ours, handled)
