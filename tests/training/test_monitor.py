"""The plain-loop monitor: cadence, records equal to ws.analyze on the saved weights, read-back,
background worker, settings checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_helpers import assert_same_rows, sgd_step

import weightspectra as ws
from weightspectra.errors import OptionError
from weightspectra.training import Monitor, analyze_series, read_run

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def train(model: Any, monitor: Monitor, steps: range, save: Path | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for step in steps:
        loss = sgd_step(torch, model, opt, gen)
        monitor.log(step, loss=loss)
        analysed = monitor.step(model, step=step)
        if save is not None and (analysed is not None or monitor.due(step)):
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            safetensors_torch.save_file(state, str(save / f"step_{step}.safetensors"))


@pytest.mark.parametrize("background", [False, True])
def test_records_equal_analyze_of_saved_weights(
    tmp_path: Path, torch_mlp: Any, background: bool
) -> None:
    model = torch_mlp(0)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    with Monitor(tmp_path / "run", every=4, background=background) as monitor:
        train(model, monitor, range(1, 14), save=ckpts)
    run = read_run(tmp_path / "run")
    assert run.step_numbers == (4, 8, 12)
    # one record per analysed layer per step: the 3-output layer has M = 3 < min_evals
    assert [(r["step"], r["name"]) for r in run.layers] == [
        (s, n) for s in (4, 8, 12) for n in ("0", "2")
    ]
    assert len(run.scalars) == 13
    options = ws.Options.from_dict(run.options)
    assert options.precision is ws.Precision.FLOAT32 and options.randomize
    for step in run.step_numbers:
        report = ws.analyze(ckpts / f"step_{step}.safetensors", options)
        for row in report.analysed:
            (record,) = [r for r in run.layers if r["step"] == step and r["name"] == row.name]
            assert_same_rows(record, row.row())
    # independent reference: λ_max and the stable rank from numpy's SVD of the saved weight
    state = safetensors_torch.load_file(str(ckpts / "step_12.safetensors"))
    sv = np.linalg.svd(state["2.weight"].double().numpy(), compute_uv=False)
    (last,) = [r for r in run.layers if r["step"] == 12 and r["name"] == "2"]
    assert last["lambda_max"] == pytest.approx(sv[0] ** 2, rel=1e-4)
    assert last["stable_rank"] == pytest.approx((sv**2).sum() / sv[0] ** 2, rel=1e-4)
    # the numbered safetensors files as a checkpoint series give the same records
    series = analyze_series(ckpts, options, run_dir=tmp_path / "series")
    assert series.step_numbers == run.step_numbers
    for a, b in zip(series.layers, run.layers, strict=True):
        assert_same_rows(a, b)


def test_dataframe_and_layers_option(tmp_path: Path, torch_mlp: Any) -> None:
    pd = pytest.importorskip("pandas")
    model = torch_mlp(1)
    with Monitor(tmp_path, every=2, layers=["^2$"]) as monitor:
        train(model, monitor, range(1, 7))
    frame = read_run(tmp_path).to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["step"]) == [2, 4, 6]
    assert set(frame["name"]) == {"2"}
    assert frame["alpha"].notna().all()
    assert list(read_run(tmp_path).to_pandas("steps")["num_layers"]) == [1, 1, 1]
    with pytest.raises(ws.InputError, match="choose one of"):
        read_run(tmp_path).to_pandas("nope")


def test_snapshot_is_taken_at_the_step(tmp_path: Path, torch_mlp: Any) -> None:
    """In the background the weights are copied at the step: changing them afterwards does not
    change the record."""
    model = torch_mlp(2)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with Monitor(tmp_path, every=1, background=True) as monitor:
        monitor.step(model, step=1)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3.0)
    record = read_run(tmp_path).layers[0]
    reference = ws.analyze(before, monitor.options).analysed[0].row()
    assert_same_rows(record, reference)


def test_epochs_cadence(tmp_path: Path, torch_mlp: Any) -> None:
    model = torch_mlp(3)
    with Monitor(tmp_path, every=2, unit="epochs") as monitor:
        for epoch in range(1, 6):
            assert monitor.step(model, step=epoch * 10) is None  # steps do not count here
            monitor.epoch_end(model, epoch=epoch, step=epoch * 10)
    run = read_run(tmp_path)
    assert run.step_numbers == (20, 40)
    assert [s["epoch"] for s in run.steps] == [2, 4]


def test_bad_settings(tmp_path: Path, torch_mlp: Any) -> None:
    with pytest.raises(OptionError, match="every must be an integer"):
        Monitor(tmp_path / "a", every=0)
    with pytest.raises(OptionError, match=r"unit='weeks' is not valid"):
        Monitor(tmp_path / "a", unit="weeks")
    with pytest.raises(OptionError, match="blas_threads must be"):
        Monitor(tmp_path / "a", blas_threads=0)
    with pytest.raises(OptionError, match=r"does not use options\.cache"):
        Monitor(tmp_path / "a", cache=str(tmp_path / "cache"))
    Monitor(tmp_path / "b", every=5).close()
    with pytest.raises(OptionError, match=r"other config \(every: stored 5, given 6\)"):
        Monitor(tmp_path / "b", every=6)
    with pytest.raises(OptionError, match=r"other options.*precision"):
        Monitor(tmp_path / "b", every=5, precision="float64")
    with pytest.raises(OptionError, match="already holds a run"):
        Monitor(tmp_path / "b", every=5, resume="never")
    monitor = Monitor(tmp_path / "b", every=5, resume="overwrite", precision="float64")
    monitor.close()
    with pytest.raises(OptionError, match="closed"):
        monitor.step(torch_mlp(0), step=5)
    with pytest.raises(ws.InputError, match="not a run folder"):
        read_run(tmp_path / "missing")


def test_background_error_is_raised(tmp_path: Path) -> None:
    """A failure on the worker thread is not lost: the next call or close re-raises it."""
    monitor = Monitor(tmp_path, every=1, background=True)
    w = {"w": np.random.default_rng(0).standard_normal((20, 10))}
    monitor.analyze_now(w, step=1)
    monitor.writer.write_step = _boom  # type: ignore[method-assign]
    monitor.analyze_now(w, step=2)
    with pytest.raises(RuntimeError, match="disk full"):
        monitor.close()


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("disk full")
