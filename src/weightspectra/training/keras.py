"""The training monitor as a Keras 3 callback (imports ``keras``).

>>> from weightspectra.training.keras import SpectraCallback     # doctest: +SKIP
>>> model.fit(x, y, callbacks=[SpectraCallback("runs/keras", every=100)])  # doctest: +SKIP

Steps count the training batches over all epochs (1-based); the epoch's logs (``loss``,
``accuracy``...) are recorded at each epoch's end.
"""

from __future__ import annotations

import os
from typing import Any

import keras  # type: ignore[import-untyped]  # Keras 3 ships no type information

from weightspectra.training.monitor import Monitor

__all__ = ["SpectraCallback"]


class SpectraCallback(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
    """Analyse the Keras model's spectra every ``every`` batches (or epochs).

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
        self.global_step = 0
        self._epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.monitor is None:
            kwargs = dict(self.monitor_kwargs)
            params = self.params or {}
            steps, epochs = params.get("steps"), params.get("epochs")
            if isinstance(steps, int) and isinstance(epochs, int):
                kwargs.setdefault("total_steps", steps * epochs)
            self.monitor = Monitor(self.run_dir, **kwargs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.global_step += 1
        if self.monitor is not None:
            self.monitor.step(self.model, step=self.global_step, epoch=float(self._epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor is None:
            return
        numbers = {}
        for key, value in (logs or {}).items():
            try:
                numbers[str(key)] = float(value)
            except (TypeError, ValueError):
                continue  # a non-scalar log entry: nothing to plot
        self.monitor.log_mapping(self.global_step, numbers, epoch=epoch + 1)
        self.monitor.epoch_end(self.model, epoch=epoch + 1, step=self.global_step)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
