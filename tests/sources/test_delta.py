"""Deltas against a base (``analyze(model, base=...)``): paired by name, never by position;
unpaired and mis-shaped tensors keep rows saying why; numbers from numpy's SVD of W − W_base."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.enums import Reason, Status
from weightspectra.sources.arrays import open_arrays
from weightspectra.sources.delta import canonical_key, delta_source, pair_keys


def _models(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    base = {
        "enc.0.fc.weight": rng.standard_normal((120, 60)),
        "enc.1.fc.weight": rng.standard_normal((80, 40)),
        "enc.1.fc.bias": rng.standard_normal(80),
        "head.weight": rng.standard_normal((30, 30)),
        "gone.weight": rng.standard_normal((20, 20)),
    }
    # the fine-tune lists its tensors in another order, under a DDP prefix, with one new head
    tuned = {
        "module.enc.1.fc.weight": base["enc.1.fc.weight"] + 0.05 * rng.standard_normal((80, 40)),
        "module.enc.0.fc.weight": base["enc.0.fc.weight"] + rng.standard_t(3, (120, 60)) * 0.1,
        "module.enc.1.fc.bias": base["enc.1.fc.bias"] + 1.0,
        "module.head.weight": rng.standard_normal((30, 10)),
        "module.new.weight": rng.standard_normal((25, 25)),
    }
    return base, tuned


def _sq_singular_values(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(matrix, compute_uv=False) ** 2)


def test_pairing_is_by_name_not_position() -> None:
    assert canonical_key("base_model.model._orig_mod.a.weight") == "a.weight"
    pairs = pair_keys(
        ["bert.encoder.q.weight", "module.fc.weight", "x.weight", "a.b.weight"],
        ["fc.weight", "encoder.q.weight", "z.weight", "m.a.b.weight", "n.a.b.weight"],
    )
    # a.b.weight is a suffix of both m.a.b.weight and n.a.b.weight: ambiguous, left unpaired
    assert pairs == {"bert.encoder.q.weight": "encoder.q.weight", "module.fc.weight": "fc.weight"}


def test_delta_rows_equal_numpy_svd_of_the_difference(rng: np.random.Generator) -> None:
    base, tuned = _models(rng)
    report = ws.analyze(tuned, base=base)
    rows = {r.name: r for r in report.layers}
    for key in ("enc.0.fc.weight", "enc.1.fc.weight"):
        row = rows[f"module.{key[: -len('.weight')]}"]
        assert row.status is Status.OK
        expected = _sq_singular_values(tuned[f"module.{key}"] - base[key])
        np.testing.assert_allclose(np.sort(row.evals), expected, rtol=1e-10)
        assert row.metrics["lambda_max"] == pytest.approx(expected[-1], rel=1e-12)
        assert row.metrics["matrix_rank"] == min(tuned[f"module.{key}"].shape)
    # the delta is not the fine-tune: its norm is that of the difference
    assert rows["module.enc.1.fc"].metrics["norm"] == pytest.approx(
        float(np.sum((tuned["module.enc.1.fc.weight"] - base["enc.1.fc.weight"]) ** 2)), rel=1e-10
    )
    head, new, gone = rows["module.head"], rows["module.new"], rows["gone"]
    assert head.status is Status.SKIPPED and head.reason_code is Reason.BAD_SHAPE
    assert "(30, 10) differs from the base's 'head.weight' (30, 30)" in head.reason
    assert "never zero-filled" in head.reason
    assert new.reason_code is Reason.UNPAIRED and new.reason.startswith("unpaired")
    assert gone.reason.startswith("only in the base")
    assert report.summary["num_layers"] == 2


def test_delta_across_formats(rng: np.random.Generator, tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    base, tuned = _models(rng)
    base_file = tmp_path / "base.safetensors"
    safetensors_numpy.save_file({k: v.astype(np.float32) for k, v in base.items()}, base_file)
    tuned_file = tmp_path / "tuned.npz"
    np.savez(tuned_file, **{k: v.astype(np.float32) for k, v in tuned.items()})
    report = ws.analyze(tuned_file, base=base_file)
    row = next(r for r in report.analysed if r.name == "module.enc.0.fc")
    diff = tuned["module.enc.0.fc.weight"].astype(np.float32).astype(np.float64) - base[
        "enc.0.fc.weight"
    ].astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(np.sort(row.evals), _sq_singular_values(diff), rtol=1e-9)


def test_low_rank_delta_is_flagged_not_fitted(rng: np.random.Generator) -> None:
    w = rng.standard_normal((384, 384))
    update = rng.standard_normal((384, 8)) @ rng.standard_normal((8, 384))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ws.NumericalWarning)
        report = ws.analyze({"fc.weight": w + update}, base={"fc.weight": w}, min_evals=10)
        plain = ws.analyze({"fc.weight": update})
    row = report.analysed[0]
    assert row.metrics["matrix_rank"] == 8 and row.metrics["alpha"] is None
    assert row.metrics["warning"] == "low-rank"
    assert "rank 8 < min_evals=10" in str(row.metrics["fit_error"])
    assert report.summary["num_fit_failed"] == 1
    # without base= the same matrix is fitted as any other (the check is for deltas only)
    assert plain.analysed[0].metrics["alpha"] is not None


def test_delta_source_is_lazy(rng: np.random.Generator) -> None:
    base, tuned = _models(rng)
    loads: list[str] = []
    source = open_arrays(tuned)
    counted = type(source)(
        description=source.description,
        entries=tuple(
            type(e)(
                **{
                    **{f: getattr(e, f) for f in e.__dataclass_fields__},
                    "load": (lambda e=e: loads.append(e.key) or e.load()),
                }
            )
            for e in source.entries
        ),
    )
    delta = delta_source(counted, open_arrays(base))
    assert loads == []
    entry = next(e for e in delta.entries if e.key == "module.enc.0.fc.weight")
    entry.load()
    assert loads == ["module.enc.0.fc.weight"]


def test_cli_analyze_with_base(rng: np.random.Generator, tmp_path: Path) -> None:
    import io

    from weightspectra.cli import run

    base, tuned = _models(rng)
    fb, ft = tmp_path / "base.npz", tmp_path / "tuned.npz"
    np.savez(fb, **base)
    np.savez(ft, **tuned)
    out, err = io.StringIO(), io.StringIO()
    assert run(["analyze", str(ft), "--base", str(fb), "-f", "csv"], out, err) == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    header = lines[0].split(",")
    rows = {line.split(",")[header.index("name")]: line.split(",") for line in lines[1:]}
    assert set(rows) == {"module.enc.0.fc", "module.enc.1.fc"}
    expected = _sq_singular_values(tuned["module.enc.0.fc.weight"] - base["enc.0.fc.weight"])
    lam = float(rows["module.enc.0.fc"][header.index("lambda_max")])
    assert lam == pytest.approx(expected[-1], rel=1e-6)
