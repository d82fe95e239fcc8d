"""A Llama-7B-shaped GGUF file against the same shapes in bf16 safetensors: time per block and
peak RSS (write them first).

    .venv/bin/python benchmarks/make_gguf_checkpoint.py --layers 1 [--type Q4_K]
    .venv/bin/python benchmarks/make_llama_checkpoint.py --layers 1
    .venv/bin/python benchmarks/bench_gguf.py [--workers 1] [--threads 1] [--precision float64]

Each checkpoint is analysed in its own child process (its peak RSS, VmHWM, is its own), whole:
embeddings, the blocks present, the head. Per-tensor times come from the progress callback
(serial runs), so the GGUF times include dequantising each tensor to float32 block by block.
"""

from __future__ import annotations

import _common

THREADS = _common.pin_threads()

import argparse  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

CHILD = (
    _common.MEASURED_CHILD
    + r"""
report = ws.analyze(sys.argv[1], workers=int(sys.argv[2]), precision=sys.argv[3],
                    progress=progress)
print(json.dumps({"total": time.perf_counter() - start, "marks": marks,
                  "peak": status()["VmHWM"], "base": base, "analysed": len(report.analysed),
                  "torch": "torch" in sys.modules}))
"""
)

#: How each format names a tensor's block, its embeddings and its head.
PATTERNS = {
    "gguf": (r"^blk\.(\d+)\.", "token_embd", "output"),
    "safetensors": (r"^model\.layers\.(\d+)\.", "model.embed_tokens", "lm_head"),
}


def summarise(result: dict[str, object], kind: str) -> dict[str, float]:
    block_re, embed, head = PATTERNS[kind]
    marks = dict(result["marks"])  # type: ignore[call-overload]
    per_block: dict[int, float] = {}
    for name, seconds in marks.items():
        found = re.match(block_re, name)
        if found is not None:
            per_block[int(found.group(1))] = per_block.get(int(found.group(1)), 0.0) + seconds
    mb = 2**20
    return {
        "blocks": len(per_block),
        "time per block (7 matrices), s": sum(per_block.values()) / max(1, len(per_block)),
        "embeddings 32000×4096, s": marks.get(embed, float("nan")),
        "head 32000×4096, s": marks.get(head, float("nan")),
        "total, s": float(result["total"]),  # type: ignore[arg-type]
        "peak RSS (VmHWM), MB": float(result["peak"]) / mb,  # type: ignore[arg-type]
        "RSS after imports, MB": float(result["base"]) / mb,  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gguf", type=Path, default=_common.BENCH_DATA / "llama7b.gguf")
    parser.add_argument("--safetensors", type=Path, default=_common.BENCH_DATA / "llama7b")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64")
    parser.add_argument("--only", choices=["gguf", "safetensors", "both"], default="both")
    args = parser.parse_args()
    print(_common.machine_line(THREADS))
    columns = {}
    if args.gguf.is_file() and args.only != "safetensors":
        from weightspectra.sources.gguf_header import check_header

        types = sorted({t.type_name for t in check_header(args.gguf).tensors})
        label = f"GGUF {'+'.join(types)}, {args.gguf.stat().st_size / 1e9:.2f} GB"
        result = _common.run_json(CHILD, str(args.gguf), str(args.workers), args.precision)
        columns[label] = summarise(result, "gguf")
    index = args.safetensors / "model.safetensors.index.json"
    if index.is_file() and args.only != "gguf":
        size = sum(f.stat().st_size for f in args.safetensors.glob("*.safetensors"))
        label = f"safetensors bf16, {size / 1e9:.2f} GB"
        result = _common.run_json(CHILD, str(args.safetensors), str(args.workers), args.precision)
        columns[label] = summarise(result, "safetensors")
    if not columns:
        raise SystemExit("no checkpoint found: write one first (see this script's docstring)")
    labels = list(columns)
    width = max(len(k) for k in next(iter(columns.values())))
    head = f"workers={args.workers} {args.precision}"
    print(f"{head:<{width}}  " + "  ".join(f"{c:>28}" for c in labels))
    for row in next(iter(columns.values())):
        cells = "  ".join(f"{columns[c][row]:>28.2f}" for c in labels)
        print(f"{row:<{width}}  {cells}")


if __name__ == "__main__":
    main()
