"""The fake quantizer: idempotence, error bound, grid size, restoration."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from weightspectra.errors import InputError, OptionError  # noqa: E402
from weightspectra.quantize import (  # noqa: E402
    fake_quantize,
    fake_quantized,
    quantizable_layers,
    quantization_error,
    quantize_codes,
    quantized_copy,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 13), (5, 3, 3, 3)])
def test_quantizer_idempotent_and_error_bounded(
    bits: int, dtype: torch.dtype, shape: tuple[int, ...]
) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(shape, generator=gen, dtype=dtype) * torch.rand(
        shape[0], *[1] * (len(shape) - 1), generator=gen, dtype=dtype
    )
    codes, scale = quantize_codes(w, bits)
    q = fake_quantize(w, bits)
    assert q.dtype == w.dtype and q.shape == w.shape
    qmax = 2 ** (bits - 1) - 1
    assert int(codes.abs().max()) == qmax
    eps = torch.finfo(dtype).eps
    # |Q(w) - w| ≤ scale/2 (plus rounding of the product in the working precision).
    assert bool(((q - w).abs() <= scale / 2 + 4 * eps * w.abs().amax()).all())
    # Idempotent: the codes of Q(w) are those of w, and the values agree to rounding.
    codes2, _ = quantize_codes(q, bits)
    assert torch.equal(codes2, codes)
    q2 = fake_quantize(q, bits)
    assert float((q2 - q).abs().max()) <= 4 * eps * float(w.abs().max())
    # At most 2^b - 1 levels per channel.
    for c in range(shape[0]):
        assert q[c].unique().numel() <= 2 * qmax + 1
    # More bits, less error.
    if bits < 8:
        assert quantization_error(w, 8) < quantization_error(w, bits)


def test_zero_channel_stays_zero_and_matches_naive_loop() -> None:
    w = torch.tensor([[0.0, 0.0, 0.0], [0.9, -0.3, 0.1], [-2.0, 0.5, 1.1]], dtype=torch.float64)
    q = fake_quantize(w, 3)
    assert torch.equal(q[0], torch.zeros(3, dtype=torch.float64))
    for c in (1, 2):
        s = float(w[c].abs().max()) / 3
        naive = [max(-3, min(3, round(float(v) / s))) * s for v in w[c]]
        assert q[c].tolist() == pytest.approx(naive, abs=1e-15)


def test_context_manager_restores_even_on_error() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with fake_quantized(net, {"2": 2}):
        assert all(row.unique().numel() <= 3 for row in net[2].weight)
        assert torch.equal(net[0].weight, before["0.weight"])
    with pytest.raises(RuntimeError, match="boom"), fake_quantized(net, 2):
        raise RuntimeError("boom")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    copy = quantized_copy(net, 3)
    assert not torch.equal(copy[2].weight, net[2].weight)
    assert torch.equal(copy[2].bias, net[2].bias)
    assert list(quantizable_layers(net)) == ["0", "2"]


def test_quantizer_bad_inputs() -> None:
    net = nn.Linear(3, 2)
    with pytest.raises(OptionError, match="bits=1 is not a valid width"):
        fake_quantize(net.weight, 1)
    with pytest.raises(OptionError, match="integer from 2 to 16"):
        fake_quantize(net.weight, 4.0)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="floating weight tensor"):
        fake_quantize(torch.ones(3, dtype=torch.int64), 4)
    with pytest.raises(InputError, match="not Linear/Conv layers"), fake_quantized(net, {"fc": 4}):
        pass
    with pytest.raises(InputError, match="no Linear or Conv"):
        quantizable_layers(nn.ReLU())
