"""A Llama-7B-shaped checkpoint (write it first with make_llama_checkpoint.py): time per block,
projected full-model time, peak RSS; and ours vs the peer on one block's matrices.

    .venv/bin/python benchmarks/make_llama_checkpoint.py --layers 1
    .venv/bin/python benchmarks/bench_llama.py [--workers 1] [--peer shapes|block|none] [--floor]

Ours runs in a child process (so its peak RSS, VmHWM, is its own) on the whole checkpoint
folder: embeddings, the blocks present, lm_head. Each tensor's time is taken from the progress
callback (serial runs). Projection to 32 blocks: 32 × mean block time + embeddings + lm_head.
The peer runs in another child on block 0 loaded as float32 torch tensors: ``--peer block`` all
7 matrices; ``--peer shapes`` (default, to keep the run short) q_proj, gate_proj and down_proj
once each, block time projected as 4·q + 2·gate + down; ours is reported both ways too.
``--floor`` also times, in this process on the same pinned threads, the float64 floor of block
0's seven matrices (``_common.gram_floor``): each matrix already in memory, converted to float64
and laid out for BLAS ``dsyrk`` before the timer starts, its Gram matrix by ``dsyrk``, then the
fastest of the eigensolvers weightspectra can choose from here (numpy's, LAPACK's two-stage,
torch's MKL), each timed on it; the block's floor is the sum. Beside it, ours on block 0 alone
in this process; the two are measured alternately, best of ``--repeats`` each
(``_common.block_against_floor``), so that a slow spell of a shared machine falls on both. (Until
2026-12-01 the conversion and a layout copy were timed inside the floor, which put ours at 0.825×
it; and ours was the child's block-0 time, measured minutes before the floor.)
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

OURS_CHILD = (
    _common.MEASURED_CHILD
    + r"""
part = sys.argv[3] if len(sys.argv) > 3 else "all"
select = {"all": {}, "blocks": {"layers": [r"\.layers\."]},
          "ends": {"exclude": [r"\.layers\."]}}[part]
report = ws.analyze(sys.argv[1], workers=int(sys.argv[2]), progress=progress, **select)
total = time.perf_counter() - start
import resource
workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"total": total, "marks": marks, "peak": status()["VmHWM"],
                  "workers_peak": workers_peak, "torch": "torch" in sys.modules,
                  "base": base, "analysed": len(report.analysed),
                  "alpha": {r.name: r.metrics["alpha"] for r in report.analysed}}))
"""
)


PEER_NAMES = {"q": "self_attn.q_proj", "gate": "mlp.gate_proj", "down": "mlp.down_proj"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=_common.BENCH_DATA / "llama7b")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--peer", choices=["shapes", "block", "none"], default="shapes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--floor", action="store_true", help="also block 0's float64 floor")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side of --floor")
    args = parser.parse_args()
    index = json.loads((args.dir / "model.safetensors.index.json").read_text())["weight_map"]
    blocks = sorted({int(m.group(1)) for k in index if (m := re.search(r"layers\.(\d+)\.", k))})
    size = sum(f.stat().st_size for f in args.dir.glob("*.safetensors"))
    print(_common.machine_line(THREADS))
    print(
        f"checkpoint {args.dir}: {len(blocks)} of 32 blocks, {size / 1e9:.2f} GB on disk; "
        f"ours with workers={args.workers}"
    )

    ours = _common.run_json(OURS_CHILD, str(args.dir), str(args.workers))
    times = dict(ours["marks"])
    block_t = [
        sum(t for n, t in times.items() if n.startswith(f"model.layers.{b}.")) for b in blocks
    ]
    per_block = sum(block_t) / len(block_t)
    embed = times.get("model.embed_tokens", 0.0)
    head = times.get("lm_head", 0.0)
    projected = 32 * per_block + embed + head
    mb = 2**20
    rows = [
        ["blocks analysed", len(blocks)],
        ["time per block (7 matrices), s", per_block],
        ["embed_tokens 32000×4096, s", embed],
        ["lm_head 32000×4096, s", head],
        ["total measured, s", ours["total"]],
        ["projected 32 blocks + embed + head, min", projected / 60],
        ["peak RSS (VmHWM), MB", ours["peak"] / mb],
        ["RSS after imports, MB", ours["base"] / mb],
        ["torch imported (MKL eigensolver)", ours["torch"]],
        ["full bf16 checkpoint on disk, GB", 13.48],
    ]
    if args.workers != 1:
        # Per-tensor times are not separable when tensors run side by side: time the blocks
        # alone and the embeddings + head alone, each in its own run.
        only_blocks = _common.run_json(OURS_CHILD, str(args.dir), str(args.workers), "blocks")
        ends = _common.run_json(OURS_CHILD, str(args.dir), str(args.workers), "ends")
        per_block = only_blocks["total"] / len(blocks)
        rows = [
            r for r in rows if not r[0].startswith(("time per", "embed", "lm_head", "projected"))
        ]
        rows.append(["time per block, blocks-only run, s", per_block])
        rows.append(["embed_tokens + lm_head, their own run, s", ends["total"]])
        rows.append(
            ["projected 32 blocks + embed + head, min", (32 * per_block + ends["total"]) / 60]
        )
        rows.append(["largest worker process's peak RSS, MB", ours["workers_peak"] / mb])
        rows.append(
            [
                f"main + {args.workers} workers at their peaks (upper bound), MB",
                (ours["peak"] + args.workers * ours["workers_peak"]) / mb,
            ]
        )
    print(_common.table(["ours", "value"], rows), flush=True)
    if args.floor:
        found = _common.block_against_floor(args.dir, ("float64",), args.repeats)["float64"]
        floor = [*found["rows"], ["block 0 floor (7 matrices)", "", "", "", found["floor"]]]
        print()
        print(
            _common.table(["matrix", "syrk f64 s", "fastest solver", "solve s", "floor s"], floor)
        )
        print(
            f"ours block 0 analysed alone in this process: {found['ours']:.2f} s = "
            f"{found['ours'] / found['floor']:.3f} × the floor (best of {args.repeats} each, "
            "measured alternately)",
            flush=True,
        )

    if args.peer == "none":
        return
    shard = {k: v for k, v in index.items()}
    parts = ["q", "gate", "down"] if args.peer == "shapes" else None
    keys = (
        [f"model.layers.0.{PEER_NAMES[p]}.weight" for p in parts]
        if parts
        else [k for k in index if k.startswith("model.layers.0.") and k.endswith("proj.weight")]
    )
    peer_rows = []
    ours_named = {n: t for n, t in times.items() if n.startswith("model.layers.0.")}
    peer_total = 0.0
    for key in keys:
        spec = {
            "kind": "safetensors",
            "path": str(args.dir / shard[key]),
            "keys": [key],
            "repeats": 1,
        }
        peer = _common.peer_seconds(spec)
        name = key.removesuffix(".weight")
        o = ours_named[name]
        dalpha = abs(peer["alpha"][0] - ours["alpha"][name])
        peer_rows.append([name, o, peer["seconds"], peer["seconds"] / o, f"{dalpha:.1e}"])
        print(
            _common.table(["matrix", "ours s", "peer s", "peer/ours", "|Δα|"], peer_rows[-1:]),
            flush=True,
        )
        peer_total += peer["seconds"]
    if parts:
        weight = [4, 2, 1]
        o_block = sum(w * r[1] for w, r in zip(weight, peer_rows, strict=True))
        p_block = sum(w * r[2] for w, r in zip(weight, peer_rows, strict=True))
        peer_rows.append(
            ["block 0, projected 4·q + 2·gate + down", o_block, p_block, p_block / o_block, ""]
        )
    else:
        o_block = sum(r[1] for r in peer_rows)
        peer_rows.append(["block 0 (7 matrices)", o_block, peer_total, peer_total / o_block, ""])
    peer_rows.append(["block 0, ours measured (7 matrices)", block_t[0], "", "", ""])
    print()
    print(_common.table(["matrix", "ours s", "peer s", "peer/ours", "|Δα|"], peer_rows))


if __name__ == "__main__":
    main()
