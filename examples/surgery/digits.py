"""Spectral surgery validated on a trained digits MLP: test accuracy before and after each edit.

Run: ``.venv/bin/python examples/surgery/digits.py`` (torch and scikit-learn; about 20 s on two
cores). Prints a markdown table: per method, the layers edited, the components kept/removed
and the test accuracy (``docs/compat.md`` holds the table of one run).
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import weightspectra as ws
from weightspectra import surgery

SEED = 0


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits split 70/30 (stratified, seeded), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x / 16.0, y, test_size=0.3, random_state=SEED, stratify=y
    )
    f32, i64 = torch.float32, torch.int64
    return (
        torch.tensor(x_tr, dtype=f32),
        torch.tensor(y_tr, dtype=i64),
        torch.tensor(x_te, dtype=f32),
        torch.tensor(y_te, dtype=i64),
    )


def trained_mlp(x: torch.Tensor, y: torch.Tensor, epochs: int = 60) -> nn.Sequential:
    """64 → 256 → 256 → 10 ReLU MLP, Adam, mini-batches of 32 (seeded)."""
    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


METHODS: dict[str, Callable[[nn.Module], surgery.SurgeryResult]] = {
    "smooth mp (MP spikes)": lambda m: surgery.smooth(m, "mp"),
    "smooth tail (power-law tail)": lambda m: surgery.smooth(m, "tail"),
    "smooth detx": lambda m: surgery.smooth(m, "detx"),
    "smooth fraction 0.5": lambda m: surgery.smooth(m, "fraction", fraction=0.5),
    "smooth fraction 0.2": lambda m: surgery.smooth(m, "fraction", fraction=0.2),
    "remove traps": lambda m: surgery.remove_traps(m),
    "clip spikes to the MP edge": lambda m: surgery.clip_spikes(m),
}


def main() -> int:
    torch.set_num_threads(2)
    x_tr, y_tr, x_te, y_te = data()
    model = trained_mlp(x_tr, y_tr)
    before = accuracy(model, x_te, y_te)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [("none (trained model)", "-", "-", before)]
    for name, method in METHODS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ws.NumericalWarning)
            result = method(model)
        edited = result.apply_to(copy.deepcopy(model))
        kept = ", ".join(f"{e.kept}/{e.rank}" for e in result.edits if not e.reason)
        removed = ", ".join(f"{e.removed_norm_rel:.2f}" for e in result.edits if not e.reason)
        rows.append((name, kept, removed, accuracy(edited, x_te, y_te)))
    for key, value in model.state_dict().items():  # surgery never edits its input
        if not torch.equal(value, reference[key]):
            sys.stderr.write(f"the input model was modified: {key}\n")
            return 1
    out = sys.stdout
    out.write(
        "| method | components kept per layer (kept/rank) | ‖ΔW‖/‖W‖ per layer | test accuracy |\n"
    )
    out.write("|---|---|---|---|\n")
    for name, kept, removed, acc in rows:
        out.write(f"| {name} | {kept} | {removed} | {acc:.4f} |\n")
    out.write(f"\n{x_te.shape[0]} test images; seed {SEED}; numpy {np.__version__}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
