"""A plan's exports: magnitude and Wanda masks against direct computations, applied masks,
widths for the quantisation code, and a LoRA rank_pattern that peft itself builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import weightspectra as ws
from weightspectra.allocation import apply_masks, magnitude_mask, match_names, wanda_mask
from weightspectra.errors import InputError


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(48, 96), nn.ReLU(), nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 40)
    )
    with torch.no_grad():  # heavy-tailed weights of different tails, so α differs by layer
        g = torch.Generator().manual_seed(seed)
        for i, m in enumerate(m for m in net if isinstance(m, nn.Linear)):
            t = torch.distributions.StudentT(2.0 + 2 * i).sample(m.weight.shape)
            m.weight.copy_(t / t.std())
            m.bias.normal_(generator=g)
    return net


def test_magnitude_masks_prune_exactly_the_smallest_weights() -> None:
    net = _net()
    plan = ws.allocate(ws.analyze(net), budget=0.7)
    keep = plan.masks(net)
    assert set(keep) == {"0.weight", "2.weight", "4.weight"}
    for name, mask in keep.items():
        w = dict(net.named_parameters())[name].detach().abs()
        sparsity = plan.values[name.removesuffix(".weight")]
        assert int((~mask).sum()) == int(np.floor(sparsity * w.numel() + 0.5))
        assert float(w[~mask].max()) <= float(w[mask].min())  # every pruned ≤ every kept
    total = sum(int((~m).sum()) for m in keep.values())
    size = sum(m.numel() for m in keep.values())
    assert abs(total / size - 0.7) < 3 / size  # the budget, to the rounding of each count


def test_magnitude_mask_ties_still_prune_the_exact_count() -> None:
    keep = magnitude_mask(np.ones((10, 10)), 0.37)
    assert int((~keep).sum()) == 37


def test_wanda_uses_the_input_norms_of_the_calibration_batches() -> None:
    net = _net(1)
    x = [torch.randn(32, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    plan = ws.allocate(ws.analyze(net), budget=0.5)
    keep = plan.masks(net, method="wanda", calibration=x)
    # the inputs of each Linear, computed here directly
    xs = torch.cat(x).double()
    h1 = torch.relu(net[0](xs.float())).double()
    h2 = torch.relu(net[2](h1.float())).double()
    for name, inputs in (("0.weight", xs), ("2.weight", h1), ("4.weight", h2)):
        norms = inputs.detach().pow(2).sum(0).sqrt().numpy()
        w = dict(net.named_parameters())[name].detach().double().numpy()
        score = np.abs(w) * norms[None, :]
        mask = keep[name].numpy()
        k = int(np.floor(plan.values[name[:-7]] * w.shape[1] + 0.5))
        assert np.all((~mask).sum(axis=1) == k)  # the same share of every output row
        for row in range(w.shape[0]):
            pruned, kept = score[row][~mask[row]], score[row][mask[row]]
            if pruned.size and kept.size:
                assert pruned.max() <= kept.min() * (1 + 1e-6)
    direct = wanda_mask(
        dict(net.named_parameters())["0.weight"].detach().numpy(),
        xs.pow(2).sum(0).sqrt().numpy(),
        plan.values["0"],
    )
    assert np.array_equal(direct, keep["0.weight"].numpy())
    with pytest.raises(InputError, match="calibration"):
        plan.masks(net, method="wanda")


def test_applied_masks_zero_the_pruned_weights_only() -> None:
    net = _net(2)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    keep = ws.allocate(ws.analyze(net), budget=0.8).masks(net)
    apply_masks(net, keep)
    for name, p in net.named_parameters():
        if name in keep:
            assert torch.all(p[~keep[name]] == 0)
            assert torch.equal(p[keep[name]], before[name][keep[name]])
        else:
            assert torch.equal(p, before[name])  # biases untouched
    arrays = {k: v.numpy().copy() for k, v in before.items()}
    np_keep = ws.allocate(ws.analyze(net), budget=0.5).masks(arrays)
    assert all(isinstance(m, np.ndarray) for m in np_keep.values())
    apply_masks(arrays, np_keep)
    assert all(np.all(arrays[k][~m] == 0) for k, m in np_keep.items())


def test_a_plan_finds_prefixed_names_and_refuses_missing_ones() -> None:
    assert match_names(["layer.0.weight"], ["bert.layer.0.weight"]) == {
        "layer.0.weight": "bert.layer.0.weight"
    }
    with pytest.raises(InputError, match="matches 2 parameters"):
        match_names(["0.weight"], ["a.0.weight", "b.0.weight"])
    net = _net()
    plan = ws.allocate(ws.analyze(net), budget=0.5)
    wrapped = nn.Sequential()
    wrapped.add_module("body", net)
    assert set(plan.masks(wrapped)) == {"body.0.weight", "body.2.weight", "body.4.weight"}
    with pytest.raises(InputError, match="no parameter"):
        plan.masks(nn.Linear(3, 3))


def test_a_bits_plan_drives_the_quantisation_code() -> None:
    from weightspectra.quantize import quantized_copy

    net = _net(3)
    plan = ws.allocate(ws.analyze(net), budget=4, kind="bits", spread=4)
    bits = plan.bits()
    assert set(bits) == {"0", "2", "4"}
    q = quantized_copy(net, bits)
    for name, b in bits.items():
        levels = dict(q.named_modules())[name].weight.detach()[0].unique().numel()
        assert levels <= 2**b  # a b-bit code per output channel
    with pytest.raises(InputError, match="no widths"):
        ws.allocate(ws.analyze(net), budget=0.5).bits()


def test_peft_builds_the_lora_ranks_of_a_rank_plan() -> None:
    peft = pytest.importorskip("peft")
    net = _net(4)
    plan = ws.allocate(ws.analyze(net), budget=6, kind="rank", spread=8)
    ranks = plan.rank_pattern()
    assert len(set(ranks.values())) > 1  # the plan is not uniform
    config = plan.lora_config(lora_alpha=16)
    model = peft.get_peft_model(net, config)
    built = {
        name.removeprefix("base_model.model."): module.lora_A["default"].out_features
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    assert built == ranks
    # and a rank_pattern given by hand to LoraConfig is taken as well
    config2 = peft.LoraConfig(r=2, target_modules=list(ranks), rank_pattern=ranks)
    model2 = peft.get_peft_model(_net(4), config2)
    sizes = {
        n.removeprefix("base_model.model."): m.lora_A["default"].out_features
        for n, m in model2.named_modules()
        if hasattr(m, "lora_A") and "default" in m.lora_A
    }
    assert sizes == ranks


def test_wanda_calibration_batches_may_be_keyword_inputs() -> None:
    class Keyed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _net(5)

        def forward(self, *, pixels: torch.Tensor) -> torch.Tensor:
            return self.body(pixels)

    net = Keyed()
    xs = [torch.randn(16, 48, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    plan = ws.allocate(ws.analyze(net), budget=0.5)
    by_kw = plan.masks(net, method="wanda", calibration=[{"pixels": x} for x in xs])
    direct = plan.masks(net.body, method="wanda", calibration=xs)
    for name, mask in direct.items():
        assert torch.equal(by_kw["body." + name], mask)


def test_masks_are_found_by_layer_name_too() -> None:
    net = _net(6)
    plan = ws.allocate(ws.analyze(net), budget=0.6)
    keep = plan.masks(net)
    assert "2" in keep and "2.weight" in keep and "2.bias" not in keep
    assert keep["2"] is keep["2.weight"]
    for name, sparsity in plan.values.items():
        pruned = float((~keep[name]).float().mean())
        assert pruned == pytest.approx(sparsity, abs=1 / keep[name].numel())
    with pytest.raises(KeyError):
        keep["nope"]
