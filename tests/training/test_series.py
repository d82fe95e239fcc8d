"""Checkpoint series: finding checkpoints and their steps, ordering, caching per checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.training import analyze_series, find_checkpoints


def touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.write_bytes(b"x")


def test_finds_steps_in_names(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "checkpoint-500/",
        "checkpoint-40/",
        "epoch=3-step=120.ckpt",
        "step_000090.safetensors",
        "model_7.npz",
        "last.ckpt",  # no step
        "epoch=2.ckpt",  # an epoch, not a step
        "model-00001-of-00002.safetensors",  # a shard
        "notes_3.txt",  # not a checkpoint
        "runs/",
    )
    found = find_checkpoints(tmp_path)
    assert [(c.path.name, c.step, c.epoch) for c in found] == [
        ("model_7.npz", 7, None),
        ("checkpoint-40", 40, None),
        ("step_000090.safetensors", 90, None),
        ("epoch=3-step=120.ckpt", 120, 3.0),
        ("checkpoint-500", 500, None),
    ]


def test_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ws.ModelFileNotFoundError, match="not a folder"):
        find_checkpoints(tmp_path / "missing")
    touch(tmp_path, "notes.txt")
    with pytest.raises(ws.InputError, match="no checkpoints found"):
        find_checkpoints(tmp_path)
    touch(tmp_path, "step_5.safetensors", "checkpoint-5/")
    with pytest.raises(ws.InputError, match="two checkpoints of step 5"):
        find_checkpoints(tmp_path)


def test_series_in_step_order_and_cached_per_checkpoint(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    for step in (10, 2, 30):
        np.savez(ckpts / f"step_{step}.npz", **{"fc.weight": rng.standard_normal((80, 40))})
    seen: list[int] = []
    run = analyze_series(ckpts, run_dir=tmp_path / "run", progress=lambda c: seen.append(c.step))
    assert run.step_numbers == (2, 10, 30) and seen == [2, 10, 30]
    for step in run.step_numbers:
        (record,) = [r for r in run.layers if r["step"] == step]
        reference = ws.analyze(ckpts / f"step_{step}.npz", ws.Options.from_dict(run.options))
        assert record["alpha"] == reference.analysed[0].metrics["alpha"]
    # a rerun analyses only the new checkpoint
    np.savez(ckpts / "step_40.npz", **{"fc.weight": rng.standard_normal((80, 40))})
    seen.clear()
    run = analyze_series(ckpts, run_dir=tmp_path / "run", progress=lambda c: seen.append(c.step))
    assert seen == [40] and run.step_numbers == (2, 10, 30, 40)
    assert [s["source"] for s in run.steps][-1].endswith("step_40.npz")
