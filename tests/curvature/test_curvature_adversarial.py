"""FGSM/PGD batches and the curvature report."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightspectra.curvature import (  # noqa: E402
    HessianOperator,
    adversarial_batches,
    curvature_report,
)
from weightspectra.errors import InputError, OptionError  # noqa: E402

CE = nn.functional.cross_entropy


def _trained_net() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(120, 6, generator=gen)
    y = (x[:, 0] + x[:, 1] > x[:, 2] + 0.5).long()
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        CE(net(x), y).backward()
        opt.step()
    net.eval()
    return net, x, y


@pytest.mark.parametrize(("method", "norm"), [("fgsm", "linf"), ("pgd", "linf"), ("pgd", "l2")])
def test_adversarial_batches_raise_loss_within_ball(method: str, norm: str) -> None:
    net, x, y = _trained_net()
    clean = [(x[:50], y[:50]), (x[50:], y[50:])]
    eps = 0.1 if norm == "linf" else 0.3
    adv = adversarial_batches(net, CE, clean, method=method, eps=eps, norm=norm, clamp=(0.0, 1.0))
    assert len(adv) == 2
    assert adv.adversarial_loss > adv.clean_loss + 0.05
    with torch.no_grad():
        clean_loss = sum(CE(net(a), b).item() * len(b) for a, b in clean) / 120
    assert abs(adv.clean_loss - clean_loss) <= 1e-6
    for (xa, ya), (xc, yc) in zip(adv, clean, strict=True):
        assert torch.equal(ya, yc)
        delta = (xa - xc).flatten(1)
        size = delta.abs().max(dim=1).values if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + 1e-6
        assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert method in adv.description and f"eps={eps:g}" in adv.description


def test_pgd_at_least_as_strong_as_fgsm_and_state_restored() -> None:
    net, x, y = _trained_net()
    net.train()
    net.zero_grad(set_to_none=True)
    flags = [p.requires_grad for p in net.parameters()]
    fgsm = adversarial_batches(net, CE, [(x, y)], method="fgsm", eps=0.1)
    pgd = adversarial_batches(net, CE, [(x, y)], method="pgd", eps=0.1, steps=20, seed=3)
    assert pgd.adversarial_loss >= fgsm.adversarial_loss - 1e-6
    assert net.training
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())


def test_operator_on_adversarial_data_carries_description() -> None:
    net, x, y = _trained_net()
    adv = adversarial_batches(net, CE, [(x, y)], method="pgd", eps=0.1, seed=0)
    H = HessianOperator(net, CE, adv, dtype=torch.float64)
    assert H.data_description.startswith("pgd linf eps=0.1")
    assert H.restrict("2").data_description == H.data_description
    assert H.loss() == pytest.approx(adv.adversarial_loss, rel=1e-5)


def test_curvature_report_table_and_frame() -> None:
    net, x, y = _trained_net()
    adv = adversarial_batches(net, CE, [(x, y)], method="fgsm", eps=0.1)
    rep = curvature_report(
        net,
        CE,
        {"clean": [(x, y)], "fgsm": adv},
        label="net",
        k=2,
        with_density=True,
        dtype=torch.float64,
        trace_options={"max_probes": 30},
        density_options={"n_steps": 20},
    )
    assert [r.data for r in rep.records] == ["clean", "fgsm"]
    clean, bad = rep.records
    assert bad.loss > clean.loss
    assert clean.top_eigenvalues[0] >= clean.top_eigenvalues[1]
    assert clean.mode == "eval" and clean.dtype == "float64"
    text = rep.table()
    for column in ("lambda_max", "trace_se", "loss", "hvps", "mode"):
        assert column in text
    assert "fgsm: fgsm linf eps=0.1" in text
    both = rep + rep
    assert len(both.records) == 4
    pd = pytest.importorskip("pandas")
    frame = rep.to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2
    assert frame["lambda_max"].tolist() == pytest.approx([r.sharpness for r in rep.records])


def test_report_plot() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    net, x, y = _trained_net()
    rep = curvature_report(net, CE, {"clean": [(x, y)]}, with_trace=False)
    ax = rep.plot()
    assert ax.get_ylabel() == "top Hessian eigenvalue"
    assert rep.records[0].trace is None


def test_adversarial_bad_inputs() -> None:
    net, x, y = _trained_net()
    with pytest.raises(OptionError, match="eps must be a positive"):
        adversarial_batches(net, CE, [(x, y)], eps=0)
    with pytest.raises(OptionError, match="method='cw' is not valid"):
        adversarial_batches(net, CE, [(x, y)], method="cw")
    with pytest.raises(OptionError, match="norm='l1' is not valid"):
        adversarial_batches(net, CE, [(x, y)], norm="l1")
    with pytest.raises(OptionError, match="steps must be a positive integer"):
        adversarial_batches(net, CE, [(x, y)], steps=0)
    with pytest.raises(OptionError, match="clamp must be"):
        adversarial_batches(net, CE, [(x, y)], clamp=(1.0, 0.0))
    emb = nn.Sequential(nn.Embedding(5, 6), nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(InputError, match="floating inputs"):
        adversarial_batches(emb, CE, [(torch.zeros(3, 1, dtype=torch.long), y[:3])])
    with pytest.raises(InputError, match="non-empty mapping"):
        curvature_report(net, CE, [(x, y)])  # type: ignore[arg-type]
    assert np.isfinite(adversarial_batches(net, CE, [(x, y)], method="fgsm").adversarial_loss)
