"""HessianOperator: exactness against dense Hessians, mini-batch averaging, state restoration."""

from __future__ import annotations

import numpy as np
import pytest
from curvature_helpers import MODELS, data_for, dense, exact_hessian, tiny_mlp

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightspectra.curvature import HessianOperator, InputHessianOperator  # noqa: E402
from weightspectra.errors import InputError, OptionError  # noqa: E402

CE = nn.functional.cross_entropy


@pytest.mark.parametrize("engine", ["double_backward", "func"])
def test_hvp_matches_exact_hessian(model_and_data, engine: str) -> None:
    name, model, x, y, exact = model_and_data
    H = HessianOperator(model, CE, [(x, y)], engine=engine)
    assert H.dim == exact.shape[0]
    if name == "cnn":
        assert H.dim <= 300
    if engine == "double_backward":
        got, want = dense(H, H.dim), exact
    else:
        # torch.func is slower on convolutions: 24 random directions pin down the same products.
        V = np.random.default_rng(7).standard_normal((H.dim, 24))
        got, want = np.column_stack([H.matvec(v) for v in V.T]), exact @ V
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-10
    assert H.hvp_count == got.shape[1]


@pytest.mark.parametrize("engine", ["double_backward", "func"])
def test_minibatches_weighted_by_size_equal_full_batch(engine: str) -> None:
    model = tiny_mlp()
    x, y = data_for("mlp", n=20)
    full = HessianOperator(model, CE, [(x, y)], engine=engine)
    # 8 + 8 + 4: the partial last batch must weigh half as much as the others.
    parts = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 20, 8)]
    split = HessianOperator(model, CE, parts, engine=engine)
    v = np.random.default_rng(0).standard_normal(full.dim)
    a, b = full.matvec(v), split.matvec(v)
    assert np.abs(a - b).max() <= 1e-12 * max(1.0, np.abs(a).max())
    assert abs(full.loss() - split.loss()) <= 1e-12
    assert np.abs(full.gradient() - split.gradient()).max() <= 1e-12


def test_restriction_is_the_diagonal_block(mlp_exact) -> None:
    model, x, y, exact = mlp_exact
    H = HessianOperator(model, CE, [(x, y)])
    sub = H.restrict("2")
    block = H.blocks["2"]
    assert sub.param_names == ["2.weight", "2.bias"]
    np.testing.assert_allclose(dense(sub, sub.dim), exact[block, block], rtol=0, atol=1e-12)
    w_only = HessianOperator(model, CE, [(x, y)], params="0.weight")
    s = H.param_slices["0.weight"]
    np.testing.assert_allclose(dense(w_only, w_only.dim), exact[s, s], rtol=0, atol=1e-12)


def test_linear_operator_view_and_counter(mlp_exact) -> None:
    model, x, y, exact = mlp_exact
    H = HessianOperator(model, CE, [(x, y)])
    lin = H.as_linear_operator()
    v = np.random.default_rng(3).standard_normal(H.dim)
    np.testing.assert_allclose(lin @ v, exact @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lin.rmatvec(v), exact @ v, rtol=1e-10, atol=1e-12)
    assert H.hvp_count == 2


def test_float32_model_evaluated_in_float64() -> None:
    model = tiny_mlp().float()
    x, y = data_for("mlp")
    H = HessianOperator(model, CE, [(x.float(), y)], dtype=torch.float64)
    # Parameters were rounded to float32 once; the Hessian itself is computed in float64.
    model64 = tiny_mlp()
    with torch.no_grad():
        for p64, p32 in zip(model64.parameters(), model.parameters(), strict=True):
            p64.copy_(p32.double())
    exact = exact_hessian(model64, x.float().double(), y)
    assert np.abs(dense(H, H.dim) - exact).max() <= 1e-10 * np.abs(exact).max()
    assert next(model.parameters()).dtype == torch.float32


def test_model_mode_gradients_and_buffers_restored() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.0), nn.Linear(5, 3)
    ).double()
    model.train()
    model[3].eval()  # a mixed state must come back exactly
    model[4].bias.requires_grad_(False)
    x, y = data_for("mlp")
    CE(model(x), y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    values = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    for mode in ("eval", "train"):
        for engine in ("double_backward", "func"):
            H = HessianOperator(model, CE, [(x, y)], mode=mode, engine=engine)
            assert "4.bias" not in H.param_names
            H.matvec(np.ones(H.dim))
            H.loss()
            H.gradient()
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for n, p in model.named_parameters():
        assert torch.equal(p, values[n])
        if n in grads:
            assert torch.equal(p.grad, grads[n])
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n


def test_train_and_eval_mode_differ_with_batchnorm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = data_for("mlp")
    v = np.random.default_rng(0).standard_normal(HessianOperator(model, CE, [(x, y)]).dim)
    h_eval = HessianOperator(model, CE, [(x, y)], mode="eval").matvec(v)
    h_train = HessianOperator(model, CE, [(x, y)], mode="train").matvec(v)
    h_train_func = HessianOperator(model, CE, [(x, y)], mode="train", engine="func").matvec(v)
    assert np.abs(h_eval - h_train).max() > 1e-3
    np.testing.assert_allclose(h_train, h_train_func, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("engine", ["double_backward", "func"])
def test_relu_input_hessian_is_psd(engine: str) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    model = model.double()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (12,), generator=gen)
    H = InputHessianOperator(model, CE, [(x[:7], y[:7]), (x[7:], y[7:])], engine=engine)
    M = dense(H, H.dim)
    assert np.abs(M - M.T).max() <= 1e-12
    evals = np.linalg.eigvalsh(M)
    assert evals.min() >= -1e-10
    assert evals.max() > 1e-5  # not trivially zero

    # A non-convex loss on the same network is not PSD: the check can fail.
    def bad(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -CE(out, t)

    neg = np.linalg.eigvalsh(
        dense(InputHessianOperator(model, bad, [(x, y)], engine=engine), H.dim)
    )
    assert neg.min() < -1e-6


def test_bad_inputs_raise() -> None:
    model = tiny_mlp()
    x, y = data_for("mlp")
    with pytest.raises(InputError, match="is empty"):
        HessianOperator(model, CE, [])
    with pytest.raises(InputError, match="single tensor"):
        HessianOperator(model, CE, x)
    with pytest.raises(InputError, match="pair"):
        HessianOperator(model, CE, [x])
    with pytest.raises(InputError, match="leading batch dimension"):
        HessianOperator(model, CE, [(x, y[:3])])
    with pytest.raises(InputError, match="matches no parameter"):
        HessianOperator(model, CE, [(x, y)], params="fc9")
    with pytest.raises(OptionError, match="mode='test' is not valid"):
        HessianOperator(model, CE, [(x, y)], mode="test")
    with pytest.raises(OptionError, match="engine"):
        HessianOperator(model, CE, [(x, y)], engine="jax")
    with pytest.raises(InputError, match=r"floating torch\.dtype"):
        HessianOperator(model, CE, [(x, y)], dtype=torch.int64)
    with pytest.raises(InputError, match=r"torch\.nn\.Module"):
        HessianOperator(lambda t: t, CE, [(x, y)])  # type: ignore[arg-type]
    H = HessianOperator(model, CE, [(x, y)])
    with pytest.raises(InputError, match=r"expected \(51,\)"):
        H.matvec(np.ones(5))
    vec = HessianOperator(model, lambda o, t: CE(o, t, reduction="none"), [(x, y)])
    with pytest.raises(InputError, match="scalar tensor"):
        vec.matvec(np.ones(vec.dim))
    frozen = tiny_mlp().requires_grad_(False)
    with pytest.raises(InputError, match="requires_grad=True"):
        HessianOperator(frozen, CE, [(x, y)])
    with pytest.raises(InputError, match="floating inputs"):
        InputHessianOperator(model, CE, [(torch.ones(3, 4, dtype=torch.int64), y[:3])])


def test_models_cover_conv() -> None:
    assert any(isinstance(m, nn.Conv2d) for m in MODELS["cnn"]().modules())
