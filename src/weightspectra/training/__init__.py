"""Spectra during training: a monitor, framework callbacks, checkpoint series, alarms.

>>> from weightspectra.training import Monitor, read_run      # doctest: +SKIP
>>> monitor = Monitor("runs/demo", every=100)                 # doctest: +SKIP
>>> monitor.step(model, step=step)                            # doctest: +SKIP
>>> read_run("runs/demo").to_pandas()                         # doctest: +SKIP

Names load on first use (PEP 562): importing this package imports no framework. The callbacks
live in their own modules, each importing its framework: :mod:`~weightspectra.training.hf`
(Hugging Face ``Trainer``), :mod:`~weightspectra.training.keras`,
:mod:`~weightspectra.training.lightning`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weightspectra.training.alarms import Alarm, AlarmKind, AlarmRules, check_alarms
    from weightspectra.training.monitor import Cadence, Monitor
    from weightspectra.training.run import Resume, Run, read_run
    from weightspectra.training.series import analyze_series, find_checkpoints
    from weightspectra.training.temperature import AlphaLR, alpha_lr_factors, layer_param_groups

_LAZY = {
    "Alarm": "weightspectra.training.alarms",
    "AlarmKind": "weightspectra.training.alarms",
    "AlarmRules": "weightspectra.training.alarms",
    "check_alarms": "weightspectra.training.alarms",
    "Cadence": "weightspectra.training.monitor",
    "Monitor": "weightspectra.training.monitor",
    "Resume": "weightspectra.training.run",
    "Run": "weightspectra.training.run",
    "read_run": "weightspectra.training.run",
    "analyze_series": "weightspectra.training.series",
    "find_checkpoints": "weightspectra.training.series",
    "AlphaLR": "weightspectra.training.temperature",
    "alpha_lr_factors": "weightspectra.training.temperature",
    "layer_param_groups": "weightspectra.training.temperature",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightspectra.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Alarm",
    "AlarmKind",
    "AlarmRules",
    "AlphaLR",
    "Cadence",
    "Monitor",
    "Resume",
    "Run",
    "alpha_lr_factors",
    "analyze_series",
    "check_alarms",
    "find_checkpoints",
    "layer_param_groups",
    "read_run",
]
