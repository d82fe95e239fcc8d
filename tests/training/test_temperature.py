"""Per-layer learning rates from α: the rule against a hand computation, the scheduler on a
torch model (rates from ws.analyze's α), and the Lightning callback."""

from __future__ import annotations

from typing import Any

import pytest

import weightspectra as ws
from weightspectra.errors import OptionError
from weightspectra.training import AlphaLR, alpha_lr_factors, layer_param_groups


def test_factors_are_a_linear_map_of_alpha() -> None:
    alphas = {"a": 2.0, "b": 5.0, "c": 3.5, "d": None, "e": float("nan")}
    got = alpha_lr_factors(alphas, low=0.2, high=2.0)
    # by hand: (α − 2)/(5 − 2) mapped onto [0.2, 2]
    assert got == pytest.approx({"a": 0.2, "b": 2.0, "c": 1.1, "d": 1.0, "e": 1.0})
    assert alpha_lr_factors({"a": 3.0, "b": 3.0}) == {"a": 1.0, "b": 1.0}
    assert alpha_lr_factors({}) == {}
    with pytest.raises(OptionError, match="need 0 < low ≤ high"):
        alpha_lr_factors(alphas, low=2.0, high=1.0)


def test_scheduler_sets_rates_from_alpha(torch_mlp: Any) -> None:
    torch = pytest.importorskip("torch")
    model = torch_mlp(0)
    groups = layer_param_groups(model)
    assert [g["name"] for g in groups] == ["0", "2", "4"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = torch.optim.SGD(groups, lr=1.0)
    sched = AlphaLR(opt, model, base_lr=0.1, gamma=0.5, low=0.5, high=1.5)
    assert sched.learning_rates() == {"0": 0.1, "2": 0.1, "4": 0.1}
    factors = sched.step()
    report = ws.analyze(model, sched.options)
    alphas = {r.name: r.metrics["alpha"] for r in report.analysed}
    assert set(alphas) == {"0", "2"}  # layer 4 has M = 3 < min_evals: factor 1
    low, high = sorted(alphas, key=lambda n: alphas[n])
    assert factors == {low: 0.5, high: 1.5, "4": 1.0}
    assert sched.learning_rates() == pytest.approx({low: 0.025, high: 0.075, "4": 0.05})
    with pytest.raises(OptionError, match="gamma must be in"):
        AlphaLR(opt, model, base_lr=0.1, gamma=0.0)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")
def test_lightning_callback() -> None:
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    from weightspectra.training.lightning import AlphaLRCallback

    class Tiny(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = torch.nn.Linear(12, 48)
            self.fc2 = torch.nn.Linear(48, 24)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.fc2(torch.relu(self.fc1(x))), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(layer_param_groups(self), lr=0.01)

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(
        torch.randn(16, 12, generator=g), torch.randn(16, 24, generator=g)
    )
    callback = AlphaLRCallback(0.01, gamma=0.9)
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    module = Tiny()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    assert callback.scheduler is not None and callback.scheduler.epoch == 2
    rates = callback.scheduler.learning_rates()
    assert sorted(rates.values()) == pytest.approx([0.01 * 0.81 * 0.5, 0.01 * 0.81 * 1.5])


def test_hugging_face_callback(tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="the Trainer needs accelerate")
    from weightspectra.training.hf import AlphaLRCallback
    from weightspectra.training.temperature import measure_alphas

    class Tiny(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = torch.nn.Linear(12, 48)
            self.fc2 = torch.nn.Linear(48, 24)

        def forward(self, x: Any, labels: Any) -> dict[str, Any]:
            out = self.fc2(torch.relu(self.fc1(x)))
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    class Data(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(i)
            return {"x": torch.randn(12, generator=g), "labels": torch.randn(24, generator=g)}

    model = Tiny()
    opt = torch.optim.SGD(layer_param_groups(model), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=8,
        report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
    )  # fmt: skip
    callback = AlphaLRCallback()
    transformers.Trainer(
        model=model, args=args, train_dataset=Data(), optimizers=(opt, sched), callbacks=[callback]
    ).train()
    alphas = measure_alphas(model)
    low, high = sorted(alphas, key=lambda n: alphas[n] or 0.0)
    assert callback.factors == {low: 0.5, high: 1.5}
    assert sched.base_lrs == pytest.approx([0.01 * callback.factors[n] for n in ("fc1", "fc2")])
