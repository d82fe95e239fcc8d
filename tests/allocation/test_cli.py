"""``weightspectra allocate``: from a report JSON or a model, the plan printed and written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.allocation import AllocationPlan
from weightspectra.cli import EXIT_OK, EXIT_USAGE, run


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    tensors = {
        f"layers.{i}.proj.weight": rng.standard_t(2 + i, (96, 48)).astype(np.float32)
        for i in range(4)
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    return path


def test_allocate_from_a_report_json(model_file: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    code, _, err = cli("analyze", str(model_file), "-f", "json", "-o", str(report_path))
    assert code == EXIT_OK, err
    plan_path = tmp_path / "plan.json"
    code, out, err = cli(
        "allocate", str(report_path), "--kind", "sparsity", "--budget", "0.7", "-o", str(plan_path)
    )
    assert code == EXIT_OK, err
    assert "budget 0.7, achieved 0.7" in out and "layers.3.proj" in out
    plan = AllocationPlan.from_json(plan_path)
    sizes = {a.name: a.size for a in plan.layers}
    mean = sum(sizes[n] * v for n, v in plan.values.items()) / sum(sizes.values())
    assert mean == pytest.approx(0.7, abs=1e-12)
    # the same plan as the library's from the same report
    assert plan.values == ws.allocate(ws.Report.from_json(report_path), budget=0.7).values


def test_allocate_from_a_model_analyses_it_first(model_file: Path) -> None:
    code, out, err = cli(
        "allocate",
        str(model_file),
        "--kind",
        "bits",
        "--budget",
        "4",
        "--metric",
        "alpha_farms",
        "-f",
        "json",
        "--pin",
        "layers.0.proj=8",
    )
    assert code == EXIT_OK, err
    assert "estimator farms" in err
    data = json.loads(out)
    values = {a["name"]: a["value"] for a in data["layers"]}
    assert values["layers.0.proj"] == 8 and all(float(v).is_integer() for v in values.values())
    assert data["achieved"] <= 4


def test_allocate_errors_are_one_line(model_file: Path, tmp_path: Path) -> None:
    code, _, err = cli("allocate", str(model_file), "--budget", "0.999")
    assert code == EXIT_USAGE and "budgets from 0 to 0.99 can" in err
    code, _, err = cli("allocate", str(model_file), "--budget", "0.5", "--pin", "oops")
    assert code == EXIT_USAGE and "NAME=VALUE" in err
    assert "Traceback" not in err


def test_diff_damage_ranks_the_quantised_layer_first(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    full = {f"l{i}.weight": rng.standard_t(3, (128, 64)).astype(np.float32) for i in range(3)}
    damaged = dict(full)
    w = full["l1.weight"]
    step = np.abs(w).max() / 1.0  # 1-level rounding: most entries become 0
    damaged["l1.weight"] = (np.round(w / step) * step).astype(np.float32)
    save_file(full, str(tmp_path / "a.safetensors"))
    save_file(damaged, str(tmp_path / "b.safetensors"))
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    code, out, err = cli("diff", a, b, "--damage", "--keep", "1")
    assert code == EXIT_OK, err
    assert out.strip().splitlines()[-1] == "keep at higher precision, most damaged first: l1"
    code, out, err = cli("diff", a, b, "--damage", "-f", "json")
    assert code == EXIT_OK, err
    rows = json.loads(out)["rows"]
    assert {r["name"]: r["rank"] for r in rows}["l1"] == 1
    assert {r["name"]: r["damage"] for r in rows}["l0"] == 0.0  # unchanged layers: no damage


def test_allocate_takes_candidates_and_groups(model_file: Path) -> None:
    code, out, err = cli(
        "allocate", str(model_file), "--kind", "bits", "--budget", "4",
        "--candidates", "2", "4", "8", "-f", "json",
    )  # fmt: skip
    assert code == EXIT_OK, err
    assert {a["value"] for a in json.loads(out)["layers"]} <= {2, 4, 8}
    code, out, err = cli(
        "allocate", str(model_file), "--budget", "0.5", "--group", r"(layers)\.[01]\.", "-f", "json"
    )
    assert code == EXIT_OK, err
    values = {a["name"]: a["value"] for a in json.loads(out)["layers"]}
    assert values["layers.0.proj"] == values["layers.1.proj"]
