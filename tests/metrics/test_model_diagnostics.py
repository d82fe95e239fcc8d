"""Model-level diagnostics from plain per-layer rows."""

from __future__ import annotations

import math

import pytest

from weightspectra.errors import OptionError
from weightspectra.metrics.model_diagnostics import model_diagnostics


def rows() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(6):
        out.append(
            {
                "layer_id": i,
                "name": f"conv{i}",
                "layer_type": "conv2d",
                "N": 64,
                "M": 64,
                "alpha": 1.5 + 0.5 * i,
                "log_spectral_norm": 1.0 + 0.02 * i,
                "phase": "heavy-tailed",
                "warning": "over-trained" if i == 0 else "",
            }
        )
    out.append(
        {
            "layer_id": 6,
            "name": "fc",
            "layer_type": "dense",
            "N": 100,
            "M": 10,
            "alpha": None,
            "spectral_norm": 5.0,
            "phase": None,
            "warning": "fit-failed",
        }
    )
    return out


def test_correlation_flow_per_type() -> None:
    res = model_diagnostics(rows())
    conv = res["correlation_flow"]["conv2d"]
    assert conv["depth"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert conv["slope"] == pytest.approx(0.5)
    assert res["correlation_flow"]["dense"]["alpha"] == []  # failed fit: no number
    assert res["correlation_flow"]["dense"]["slope"] is None


def test_counts() -> None:
    res = model_diagnostics(rows())
    assert res["num_layers"] == 7
    assert res["phase_counts"] == {"heavy-tailed": 6}
    assert res["warning_counts"] == {"over-trained": 1, "fit-failed": 1}
    assert res["num_failed_fits"] == 1


def test_scale_collapse_flags_the_small_layer_only() -> None:
    data = rows()
    assert model_diagnostics(data)["scale_collapse"] == []
    data[3]["log_spectral_norm"] = -1.0  # two decades below its five peers
    found = model_diagnostics(data)["scale_collapse"]
    assert [f["name"] for f in found] == ["conv3"]
    assert found[0]["z"] < -3.5
    assert found[0]["group_median"] == pytest.approx(1.04)


def test_scale_collapse_needs_a_group() -> None:
    data = rows()[:2]
    data[1]["log_spectral_norm"] = -5.0
    assert model_diagnostics(data)["scale_collapse"] == []


def test_spectral_norm_used_when_log_missing() -> None:
    data = [
        {"layer_type": "dense", "N": 10, "M": 10, "spectral_norm": s} for s in (10, 10, 10, 0.01)
    ]
    found = model_diagnostics(data)["scale_collapse"]
    assert len(found) == 1 and found[0]["log_spectral_norm"] == pytest.approx(-2.0)
    assert found[0]["z"] == -math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"collapse_z": 0}, "collapse_z must be a positive"),
        ({"collapse_decades": -1}, "collapse_decades must be a number ≥ 0"),
        ({"min_group": 1}, "min_group must be an integer ≥ 2"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        model_diagnostics(rows(), **kwargs)  # type: ignore[arg-type]
