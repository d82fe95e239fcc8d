"""Run the peer (weightwatcher 0.7.7) on a small rank-deficient model; write its details as CSV
and the model's weights as .npz.

The model is built so that the rank-type metrics are hard: a float32 Conv2d whose kernel slices
have very different norms, an all-zero and a proportional input channel, and small singular
values around the weak-rank tolerance before and after the convolution scaling; and a Linear
layer likewise. Run only in a subprocess: importing the peer reconfigures logging and warnings
process-wide. Usage: python peer_ranks_script.py POOL OUT.csv WEIGHTS.npz
"""

from __future__ import annotations

import contextlib
import io
import sys

import numpy as np


def rank_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The model's weights, float32, by state-dict key."""
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((50, 30, 3, 3)).astype(np.float32)
    conv[:, 0] = 0.0  # a dead input channel: one exact zero per slice
    conv[:, 1] = 1e-3 * conv[:, 2]  # proportional channels: σ at float32 round-off
    for i in range(3):
        for j in range(3):
            conv[:, :, i, j] *= np.float32(10.0 ** (i - j))
    # a small channel whose λ crosses the weak-rank tolerance 1e-6 only once scaled: 1.2e-6 to
    # 1.9e-6 raw, below 1e-6 pooled (×½), 5e-6 to 9e-6 unpooled (×rf/2 = 4.5)
    conv[:, 3] = conv[:, 3] / np.linalg.norm(conv[:, 3], axis=0) * np.float32(1.8e-3)
    fc = rng.standard_normal((60, 40)).astype(np.float32)
    fc[:, 5] = fc[:, 6]  # duplicated column: rank loss
    fc[:, 7] *= np.float32(1e-9)  # σ ≈ 1e-9·σ_max: nonzero for numpy's tolerance, not Gram's
    fc[:, 8] = fc[:, 8] / np.linalg.norm(fc[:, 8]) * np.float32(9e-4)  # λ ≈ 8e-7 < 1e-6
    return {"conv.weight": conv, "fc.weight": fc}


def main() -> None:
    pool, out, weights_out = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
    import torch
    import weightwatcher as ww
    from torch import nn

    weights = rank_weights()
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(30, 50, 3, bias=False))
    model.add_module("fc", nn.Linear(40, 60, bias=False))
    with torch.no_grad():
        model.conv.weight.copy_(torch.from_numpy(weights["conv.weight"]))
        model.fc.weight.copy_(torch.from_numpy(weights["fc.weight"]))
    np.savez(weights_out, **weights)
    with contextlib.redirect_stdout(io.StringIO()):  # the peer prints from its fitter
        details = ww.WeightWatcher(model=model).analyze(pool=pool)
    details.to_csv(out, index=False)


if __name__ == "__main__":
    main()
