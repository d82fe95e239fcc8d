"""The training monitor as a Hugging Face ``Trainer`` callback (imports ``transformers``).

>>> from weightspectra.training.hf import SpectraCallback          # doctest: +SKIP
>>> trainer = Trainer(..., callbacks=[SpectraCallback("runs/bert", every=500)])  # doctest: +SKIP

Steps are the trainer's ``global_step`` (optimiser steps done, 1-based); logged numbers
(``loss``, ``eval_accuracy``...) are recorded beside the spectra. ``total_steps`` comes from the
trainer's ``max_steps``, so the late-α alarm is on.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from weightspectra.options import Options
from weightspectra.training.monitor import Monitor
from weightspectra.training.temperature import alpha_lr_factors, measure_alphas

__all__ = ["AlphaLRCallback", "SpectraCallback"]


class SpectraCallback(TrainerCallback):
    """Analyse the model's spectra every ``every`` optimiser steps (or epochs) of a ``Trainer``.

    Parameters
    ----------
    run_dir : path-like
        The run folder.
    **monitor_kwargs
        Passed to :class:`~weightspectra.training.monitor.Monitor` (``every``, ``unit``,
        ``layers``, ``options``, ``background``, ...).

    Attributes
    ----------
    monitor : Monitor
        Made when training begins (``None`` before).
    """

    def __init__(self, run_dir: str | os.PathLike[str], **monitor_kwargs: Any) -> None:
        self.run_dir = run_dir
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Monitor | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.monitor is None:
            options = dict(self.monitor_kwargs)
            if state.max_steps and state.max_steps > 0:
                options.setdefault("total_steps", int(state.max_steps))
            self.monitor = Monitor(self.run_dir, **options)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None and model is not None:
            self.monitor.step(model, step=int(state.global_step), epoch=state.epoch)

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None and model is not None and state.epoch is not None:
            epoch = round(float(state.epoch))
            self.monitor.epoch_end(model, epoch=epoch, step=int(state.global_step))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if self.monitor is None or not logs:
            return
        numbers = {
            k: float(v)
            for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
        }
        self.monitor.log_mapping(int(state.global_step), numbers, epoch=state.epoch)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None


class AlphaLRCallback(TrainerCallback):
    """Per-layer learning rates from α for a ``Trainer``, updated at each epoch's end.

    The trainer's own schedule is kept: each epoch the scheduler's ``base_lrs`` (the rates its
    schedule multiplies) become the initial rates times the factor of
    :func:`~weightspectra.training.temperature.alpha_lr_factors` for the group's layer. Pass
    the trainer an optimiser built from
    :func:`~weightspectra.training.temperature.layer_param_groups` (``optimizers=(opt,
    scheduler)``), so that each parameter group is one named layer.

    Parameters
    ----------
    low, high : float, default 0.5, 1.5
        The range of the factors.
    options : Options, optional
        Analysis options (default: ``Options(precision="float32")``).

    Attributes
    ----------
    factors : dict
        The factor of each group name at the last epoch's end.
    """

    def __init__(
        self, *, low: float = 0.5, high: float = 1.5, options: Options | None = None
    ) -> None:
        alpha_lr_factors({}, low, high)  # validates the range
        self.low, self.high = low, high
        self.options = options
        self.factors: dict[str, float] = {}
        self._initial: list[float] | None = None

    def on_epoch_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None or optimizer is None or not hasattr(lr_scheduler, "base_lrs"):
            return
        if self._initial is None:
            self._initial = [float(b) for b in lr_scheduler.base_lrs]
        names = [str(g.get("name", "")) for g in optimizer.param_groups]
        alphas = measure_alphas(model, self.options)
        self.factors = alpha_lr_factors(
            {n: alphas.get(n) for n in names if n}, low=self.low, high=self.high
        )
        lr_scheduler.base_lrs = [
            base * self.factors.get(name, 1.0)
            for base, name in zip(self._initial, names, strict=True)
        ]
