"""Validation of :class:`~weightspectra.options.Options`: each check raises
:class:`~weightspectra.errors.OptionError` naming the option, what it must be and the value."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from weightspectra.errors import OptionError
from weightspectra.fitting.uncertainty import BOOTSTRAP_REPLICATES

if TYPE_CHECKING:
    from weightspectra.options.definition import Options

__all__ = ["check", "check_farms", "check_sizes", "check_thresholds", "is_int", "is_real"]


def check(ok: bool, name: str, expected: str, value: object) -> None:
    """Raise an OptionError naming ``name``, ``expected`` and ``value`` unless ``ok``."""
    if not ok:
        raise OptionError(f"{name} must be {expected}, got {value!r}")


def is_real(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: object) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_sizes(options: Options) -> None:
    """Counts, sizes and seeds: positive integers where they must be."""
    for name in ("min_evals", "max_evals"):
        value = getattr(options, name)
        if value is None and name == "max_evals":
            continue
        check(is_int(value) and value >= 1, name, "a positive integer", value)
    if options.max_evals is not None and options.max_evals < options.min_evals:
        raise OptionError(
            f"max_evals={options.max_evals} is below min_evals={options.min_evals}; "
            "raise max_evals or lower min_evals"
        )
    if options.min_tail is not None:
        check(
            is_int(options.min_tail) and options.min_tail >= 2,
            "min_tail",
            "None or an integer ≥ 2",
            options.min_tail,
        )
    check(is_int(options.seed) and options.seed >= 0, "seed", "an integer ≥ 0", options.seed)
    check(
        is_int(options.bootstrap) and (options.bootstrap == 0 or options.bootstrap >= 10),
        "bootstrap",
        f"0 (off) or an integer ≥ 10, e.g. {BOOTSTRAP_REPLICATES}",
        options.bootstrap,
    )
    check(
        is_int(options.max_fingers) and options.max_fingers >= 1,
        "max_fingers",
        "a positive integer",
        options.max_fingers,
    )
    check(
        is_int(options.collapse_min_group) and options.collapse_min_group >= 2,
        "collapse_min_group",
        "an integer ≥ 2",
        options.collapse_min_group,
    )


def check_farms(options: Options) -> None:
    """The FARMS window options."""
    check(
        is_real(options.farms_ratio) and options.farms_ratio >= 1,
        "farms_ratio",
        "a finite number ≥ 1 (1: square windows)",
        options.farms_ratio,
    )
    check(
        is_real(options.farms_stride) and 0 < options.farms_stride <= 1,
        "farms_stride",
        "a fraction in (0, 1] of the window (1: windows side by side)",
        options.farms_stride,
    )
    if options.farms_window is not None:
        check(
            is_int(options.farms_window) and options.farms_window >= 2,
            "farms_window",
            "None (the largest window that fits) or an integer ≥ 2",
            options.farms_window,
        )


def check_thresholds(options: Options) -> None:
    """Thresholds of the diagnostics: finite, in range, and ordered where they must be."""
    for name in ("tw_multiplier", "fingers_alpha_drop", "collapse_z"):
        value = getattr(options, name)
        check(is_real(value) and value > 0, name, "a positive finite number", value)
    for name in ("spike_rel_gap", "collapse_decades"):
        value = getattr(options, name)
        check(is_real(value) and value >= 0, name, "a finite number ≥ 0", value)
    for name in (
        "mp_max_ks",
        "bulk_decay_share",
        "heavy_share",
        "rank_collapse_share",
        "ci_level",
        "p_threshold",
    ):
        value = getattr(options, name)
        check(is_real(value) and 0 < value < 1, name, "a number in (0, 1)", value)
    if options.heavy_share < options.bulk_decay_share:
        raise OptionError(
            f"heavy_share={options.heavy_share} is below bulk_decay_share="
            f"{options.bulk_decay_share}; raise heavy_share or lower bulk_decay_share"
        )
    for name in (
        "heavy_alpha_max",
        "over_trained_alpha",
        "under_trained_alpha",
        "spurious_alpha",
    ):
        value = getattr(options, name)
        check(is_real(value) and value > 1, name, "a finite number > 1", value)
    if not options.over_trained_alpha < options.under_trained_alpha <= options.spurious_alpha:
        raise OptionError(
            "expected over_trained_alpha < under_trained_alpha ≤ spurious_alpha, got "
            f"{options.over_trained_alpha}, {options.under_trained_alpha}, {options.spurious_alpha}"
        )
