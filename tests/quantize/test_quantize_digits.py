"""The accuracy claim of curvature.md on scikit-learn's digits, in three seeds."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn")
from torch import nn  # noqa: E402

from weightspectra.quantize import evaluate, plan_bits, sensitivity_table  # noqa: E402

CE = nn.functional.cross_entropy


def _digits(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.3, random_state=seed, stratify=y
    )
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    i = lambda a: torch.tensor(a, dtype=torch.int64)  # noqa: E731
    return f(x_tr), i(y_tr), f(x_te), i(y_te)


def _train(seed: int, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(60):
        perm = torch.randperm(x.shape[0], generator=gen)
        for k in range(0, x.shape[0], 64):
            idx = perm[k : k + 64]
            opt.zero_grad()
            CE(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


@pytest.mark.slow  # about 10 s per seed on 2 idle cores; minutes on a loaded machine
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curvature_plan_beats_uniform_two_bit_on_digits(seed: int) -> None:
    x_tr, y_tr, x_te, y_te = _digits(seed)
    net = _train(seed, x_tr, y_tr)
    train_batches = [(x_tr[k : k + 256], y_tr[k : k + 256]) for k in range(0, x_tr.shape[0], 256)]
    table = sensitivity_table(net, loss_fn=CE, batches=train_batches, seed=seed)
    plan = plan_bits(table, avg_bits=2.5, sensitivity="hessian")
    assert plan.avg_bits <= 2.5
    test = [(x_te, y_te)]
    full = evaluate(net, CE, test).accuracy
    mixed = evaluate(net, CE, test, plan).accuracy
    uniform2 = evaluate(net, CE, test, 2).accuracy
    eight = evaluate(net, CE, test, 8).accuracy
    assert full is not None and mixed is not None and uniform2 is not None and eight is not None
    assert full > 0.9  # the model is trained, so the comparison means something
    assert mixed - uniform2 >= 0.03, (mixed, uniform2, plan.bits)
    assert abs(eight - full) <= 0.01
