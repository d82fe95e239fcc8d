"""The framework callbacks, each with a tiny model for a few steps: one record per layer per
analysed step, equal to ws.analyze on the weights saved at that step."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_helpers import assert_same_rows

import weightspectra as ws
from weightspectra.training import analyze_series, read_run


def check_against_saved(run_dir: Path, saved: dict[int, Any]) -> None:
    run = read_run(run_dir)
    assert run.step_numbers == tuple(sorted(saved))
    options = ws.Options.from_dict(run.options)
    for step, weights in saved.items():
        report = ws.analyze(weights, options)
        ok = [r for r in report.layers if r.status is not ws.Status.SKIPPED]
        records = [r for r in run.layers if r["step"] == step]
        assert [r["name"] for r in records] == [r.name for r in ok]  # one record per layer
        for record, row in zip(records, ok, strict=True):
            assert_same_rows(record, row.row())


def test_hugging_face_trainer(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")
    from weightspectra.training.hf import SpectraCallback

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=16, num_labels=2,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)

    class Data(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(i)
            return {"input_ids": torch.randint(0, 60, (8,), generator=g), "labels": i % 2}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=8,
        save_steps=3, logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    callback = SpectraCallback(tmp_path / "run", every=3)
    transformers.Trainer(model=model, args=args, train_dataset=Data(), callbacks=[callback]).train()
    run = read_run(tmp_path / "run")
    assert run.step_numbers == (3, 6)
    assert {s["name"] for s in run.scalars} >= {"loss", "learning_rate"}
    assert run.meta["config"]["every"] == 3
    # the Trainer's own checkpoints (checkpoint-3, checkpoint-6) as a series: the same records
    series = analyze_series(
        tmp_path / "out", ws.Options.from_dict(run.options), run_dir=tmp_path / "series"
    )
    assert series.step_numbers == (3, 6)
    assert [s["epoch"] for s in series.steps] == [0.75, 1.5]
    assert len(series.layers) == len(run.layers) > 0
    by_key = {(r["step"], r["name"]): r for r in run.layers}
    for record in series.layers:
        assert_same_rows(by_key[(record["step"], record["name"])], record)
    assert {s["name"] for s in series.scalars} >= {"loss"}  # from trainer_state.json


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")
def test_lightning(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from weightspectra.training.lightning import SpectraCallback

    saved: dict[int, Any] = {}

    class Tiny(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = torch.nn.Linear(12, 48)
            self.fc2 = torch.nn.Linear(48, 3)

        def forward(self, x: Any) -> Any:
            return self.fc2(torch.relu(self.fc1(x)))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self(x), y)
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            # runs before the callbacks' hook of the same name, after the optimiser step
            if self.trainer.global_step % 2 == 0:
                saved[self.trainer.global_step] = {
                    k: v.detach().clone() for k, v in self.state_dict().items()
                }

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(32, 12, generator=g), torch.randn(32, 3, generator=g)
    )
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpts", every_n_train_steps=2, save_top_k=-1
    )
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SpectraCallback(tmp_path / "run", every=2), checkpoints],
    )  # fmt: skip
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    assert sorted(saved) == [2, 4, 6, 8]
    check_against_saved(tmp_path / "run", saved)
    run = read_run(tmp_path / "run")
    assert {s["name"] for s in run.scalars} >= {"train_loss_epoch"}
    # Lightning's own .ckpt files (epoch=E-step=N.ckpt) as a series: the same records
    series = analyze_series(
        tmp_path / "ckpts", ws.Options.from_dict(run.options), run_dir=tmp_path / "series"
    )
    assert series.step_numbers == (2, 4, 6, 8)
    assert [s["epoch"] for s in series.steps] == [0, 0, 1, 1]
    by_key = {(r["step"], r["name"]): r for r in run.layers}
    assert len(series.layers) == len(run.layers)
    for record in series.layers:
        # the .ckpt state dict names the module's tensors as the module does
        assert_same_rows(by_key[(record["step"], record["name"])], record)


def test_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "torch"))
    keras = pytest.importorskip("keras")
    from weightspectra.training.keras import SpectraCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(48, activation="relu"), keras.layers.Dense(3)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    saved: dict[int, Any] = {}

    class Saver(keras.callbacks.Callback):  # type: ignore[misc]
        step = 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.step += 1
            if self.step % 2 == 0:
                saved[self.step] = {
                    w.path: np.array(keras.ops.convert_to_numpy(w)) for w in model.weights
                }

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 12)), rng.standard_normal((32, 3))
    callback = SpectraCallback(tmp_path / "run", every=2)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Saver(), callback])
    run = read_run(tmp_path / "run")
    assert run.step_numbers == (2, 4, 6, 8)
    assert {s["name"] for s in run.scalars} >= {"loss"}
    # the records name Keras layers by their paths; the saved kernels analysed as arrays give
    # the same spectra (Keras kernels are (in, out): the Gram spectrum is transpose-invariant)
    options = ws.Options.from_dict(run.options)
    for step, weights in saved.items():
        kernels = {k.replace("/", "."): v for k, v in weights.items() if v.ndim == 2}
        report = ws.analyze(kernels, options)
        records = [r for r in run.layers if r["step"] == step]
        assert len(records) == len(report.analysed) == 1
        for column in ("lambda_max", "alpha", "stable_rank", "mp_softrank", "num_spikes"):
            assert records[0][column] == report.analysed[0].metrics[column], column
