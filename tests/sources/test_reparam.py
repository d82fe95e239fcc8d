"""Parametrised weights: the weight a layer uses is analysed, its stored parts are explained.

Modules (``torch.nn.utils.parametrize``, and the older weight_norm / spectral_norm hooks) are
computed by the module; state dicts and files rebuild weight norm as ``g · v / ‖v‖``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.enums import LayerType
from weightspectra.sources import open_model
from weightspectra.sources.reparam import weight_norm

torch = pytest.importorskip("torch", reason="torch is an optional extra")
from torch import nn  # noqa: E402
from torch.nn.utils import parametrizations  # noqa: E402


def _svd_evals(matrix: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False) ** 2)


def _conv1d_evals(kernel: np.ndarray) -> np.ndarray:
    """Pooled Conv1d ESD: every kernel position's (out, in) matrix, eigenvalues × 1/2."""
    per_position = [_svd_evals(kernel[:, :, k]) for k in range(kernel.shape[2])]
    return np.sort(np.concatenate(per_position)) * 0.5


def _used_weight(module: nn.Module) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(module.weight.detach().numpy(), np.float64)


class PositionalConv(nn.Module):
    """wav2vec2's positional convolution: a grouped Conv1d, weight norm over the kernel axis."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(32, 32, kernel_size=20, padding=10, groups=4)
        parametrizations.weight_norm(self.conv, name="weight", dim=2)
        with torch.no_grad():  # a magnitude that is not the norm of v, as after training
            self.conv.parametrizations.weight.original0.mul_(torch.linspace(0.5, 2.0, 20))


def _reasons(report: ws.Report) -> dict[str, str]:
    return {r.name: r.reason for r in report.layers if r.status is ws.Status.SKIPPED}


def test_weight_norm_module_analyses_the_effective_weight() -> None:
    torch.manual_seed(0)
    model = PositionalConv()
    report = ws.analyze(model)
    row = report["conv"]
    assert row.status is ws.Status.OK and row.layer_type == "conv1d" and row.key == "conv.weight"
    np.testing.assert_allclose(row.evals, _conv1d_evals(_used_weight(model.conv)), rtol=1e-6)
    reasons = _reasons(report)
    for part, role in (("original0", "magnitude g"), ("original1", "direction v")):
        reason = reasons[f"conv.parametrizations.weight.{part}"]
        assert reason.startswith(f"parametrisation of conv.weight (weight norm, {role})")
        assert "analysed as the effective weight conv.weight" in reason
        assert "nn.Module" not in reason


def test_spectral_norm_and_orthogonal_modules(rng: np.random.Generator) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(24, 40), nn.Linear(30, 30))
    parametrizations.spectral_norm(model[0])
    parametrizations.orthogonal(model[1])
    model.train()
    sn = model[0].parametrizations.weight[0]
    u_before = sn._u.clone()
    report = ws.analyze(model)
    assert torch.equal(sn._u, u_before)  # analysing ran no power iteration
    assert model.training and sn.training  # and left the modes as they were
    model.eval()  # the reference: the weight as used without a further power iteration
    for name, module in (("0", model[0]), ("1", model[1])):
        row = report[name]
        assert row.status is ws.Status.OK and row.layer_type == "dense"
        np.testing.assert_allclose(row.evals, _svd_evals(_used_weight(module)), rtol=1e-6)
    reason = _reasons(report)["0.parametrizations.weight.original"]
    assert reason.startswith("parametrisation of 0.weight (spectral norm, original)")
    np.testing.assert_allclose(report["1"].evals, np.ones(30), rtol=1e-5)  # orthogonal


def test_old_style_weight_norm_and_spectral_norm_hooks() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(30, 20), nn.Conv2d(6, 12, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API is deprecated
        torch.nn.utils.weight_norm(model[0])
        torch.nn.utils.spectral_norm(model[1])
    with torch.no_grad():
        model[0].weight_g.mul_(3.0)  # the stale module.weight is not what is analysed
    report = ws.analyze(model)
    g, v = model[0].weight_g.detach().numpy(), model[0].weight_v.detach().numpy()
    np.testing.assert_allclose(report["0"].evals, _svd_evals(weight_norm(g, v)), rtol=1e-5)
    assert report["1"].layer_type == "conv2d"
    reasons = _reasons(report)
    assert "weight norm, magnitude g" in reasons["0.weight_g"]
    assert "analysed as the effective weight 0.weight" in reasons["0.weight_v"]
    assert "spectral norm" in reasons["1.weight_orig"]


@pytest.mark.parametrize("old_style", [False, True], ids=["parametrizations", "weight_g/v"])
def test_state_dict_rebuilds_weight_norm(old_style: bool) -> None:
    torch.manual_seed(3)
    if old_style:
        model = nn.Sequential(nn.Linear(30, 20))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.nn.utils.weight_norm(model[0])
        with torch.no_grad():
            model[0].weight_g.mul_(2.0)
        model(torch.zeros(1, 30))  # the old hook recomputes module.weight on forward
        parts = ("0.weight_g", "0.weight_v")
    else:
        model = nn.Sequential(nn.Linear(30, 20))
        parametrizations.weight_norm(model[0])
        with torch.no_grad():
            model[0].parametrizations.weight.original0.mul_(2.0)
        parts = ("0.parametrizations.weight.original0", "0.parametrizations.weight.original1")
    state = model.state_dict()
    keys = [e.key for e in open_model(state).entries]
    assert keys.index("0.weight") == keys.index(parts[0]) - 1  # just before its parts
    report = ws.analyze(state)
    row = report["0"]
    assert row.status is ws.Status.OK and row.layer_type == "dense"
    np.testing.assert_allclose(row.evals, _svd_evals(_used_weight(model[0])), rtol=1e-5)
    reasons = _reasons(report)
    assert reasons[parts[0]].startswith("parametrisation of 0.weight (weight norm, magnitude g)")
    assert "analysed as the effective weight 0.weight" in reasons[parts[1]]


def test_positional_conv_from_a_file(tmp_path: Path) -> None:
    """wav2vec2's (out, in/groups, 128)-style kernel: typed Conv1d once rebuilt, not unknown."""
    st_torch = pytest.importorskip("safetensors.torch", reason="safetensors is a dev extra")
    torch.manual_seed(4)
    model = PositionalConv()
    st_torch.save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    expected = _conv1d_evals(_used_weight(model.conv))
    for path in (tmp_path / "model.safetensors", tmp_path / "model.pt"):
        report = ws.analyze(path)
        row = report["conv"]
        assert row.status is ws.Status.OK and row.layer_type == "conv1d", path
        np.testing.assert_allclose(row.evals, expected, rtol=1e-5)
        assert "nn.Module" not in _reasons(report)["conv.parametrizations.weight.original1"]


def test_other_parametrisations_in_a_state_dict_are_skipped_with_the_fix() -> None:
    model = nn.Sequential(nn.Linear(24, 40), nn.Linear(30, 30))
    parametrizations.spectral_norm(model[0])
    parametrizations.orthogonal(model[1])
    entries = {e.key: e for e in open_model(model.state_dict()).entries}
    for key, owner in (
        ("0.parametrizations.weight.original", "0.weight"),
        ("1.parametrizations.weight.original", "1.weight"),
    ):
        assert entries[key].layer_type is LayerType.UNKNOWN
        assert f"pass the nn.Module itself to analyse {owner}" in entries[key].type_reason
    base = entries["1.parametrizations.weight.0.base"]
    assert (
        base.layer_type is LayerType.UNKNOWN and "state of the parametrisation" in base.type_reason
    )


def test_weight_norm_formula_against_torch(rng: np.random.Generator) -> None:
    v = rng.standard_normal((6, 4, 5))
    for dim in (0, 1, 2):
        g_shape = [1, 1, 1]
        g_shape[dim] = v.shape[dim]
        g = rng.uniform(0.5, 2.0, g_shape)
        ref = torch._weight_norm(torch.from_numpy(v), torch.from_numpy(g), dim).numpy()
        np.testing.assert_allclose(weight_norm(g, v), ref, rtol=1e-12)
    scalar = np.array([[[3.0]]])
    np.testing.assert_allclose(weight_norm(scalar, v), 3.0 * v / np.linalg.norm(v), rtol=1e-12)
