"""The training monitor as a PyTorch Lightning callback (imports ``lightning``).

>>> from weightspectra.training.lightning import SpectraCallback    # doctest: +SKIP
>>> Trainer(callbacks=[SpectraCallback("runs/lit", every=200)]).fit(module)  # doctest: +SKIP

Steps are the trainer's ``global_step`` (optimiser steps done, 1-based, as in the Hugging Face
callback); the logged metrics (``trainer.callback_metrics``) are recorded at each epoch's end.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl

from weightspectra.options import Options
from weightspectra.training.monitor import Monitor
from weightspectra.training.temperature import AlphaLR

__all__ = ["AlphaLRCallback", "SpectraCallback"]


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue  # a non-scalar metric: nothing to plot
    return out


class SpectraCallback(pl.Callback):
    """Analyse the module's spectra every ``every`` optimiser steps (or epochs).

    Parameters
    ----------
    run_dir : path-like
        The run folder.
    **monitor_kwargs
        Passed to :class:`~weightspectra.training.monitor.Monitor`.
    """

    def __init__(self, run_dir: str | os.PathLike[str], **monitor_kwargs: Any) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.monitor_kwargs = monitor_kwargs
        self.monitor: Monitor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None:
            kwargs = dict(self.monitor_kwargs)
            total = trainer.estimated_stepping_batches
            if isinstance(total, int) and total > 0:
                kwargs.setdefault("total_steps", total)
            self.monitor = Monitor(self.run_dir, **kwargs)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.monitor is not None:
            self.monitor.step(
                pl_module, step=int(trainer.global_step), epoch=float(trainer.current_epoch)
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None:
            return
        step = int(trainer.global_step)
        epoch = int(trainer.current_epoch) + 1
        self.monitor.log_mapping(step, _numbers(dict(trainer.callback_metrics)), epoch=epoch)
        self.monitor.epoch_end(pl_module, epoch=epoch, step=step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None


class AlphaLRCallback(pl.Callback):
    """Per-layer learning rates from α (:class:`~weightspectra.training.temperature.AlphaLR`)
    for the first optimiser of a Lightning module, updated at each epoch's end.

    The module's ``configure_optimizers`` must build the optimiser from
    :func:`~weightspectra.training.temperature.layer_param_groups` and use no other learning
    rate scheduler (the callback sets the rates, decay included).

    Parameters
    ----------
    base_lr, gamma, low, high, options
        As for :class:`~weightspectra.training.temperature.AlphaLR`.
    """

    def __init__(
        self,
        base_lr: float,
        *,
        gamma: float = 1.0,
        low: float = 0.5,
        high: float = 1.5,
        options: Options | None = None,
    ) -> None:
        super().__init__()
        self.settings = {"base_lr": base_lr, "gamma": gamma, "low": low, "high": high}
        self.options = options
        self.scheduler: AlphaLR | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scheduler = AlphaLR(
            trainer.optimizers[0], pl_module, options=self.options, **self.settings
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
