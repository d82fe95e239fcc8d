"""Write a Llama-7B-shaped sharded safetensors checkpoint of random bf16 (or fp16) weights.

    .venv/bin/python benchmarks/make_llama_checkpoint.py [--layers 32] [--out bench-data/llama7b]

Tensors (names as in Hugging Face Llama): model.embed_tokens 32000×4096; per block
self_attn.{q,k,v,o}_proj 4096×4096, mlp.{gate,up}_proj 11008×4096, mlp.down_proj 4096×11008,
two 4096 RMSNorm scales; model.norm; lm_head 32000×4096. All 32 blocks: 6.7 B values, 13.5 GB.
``--layers K`` writes only K blocks (embeddings and head included). Weights are N(0, 0.02²)
rounded to bf16, written in row chunks (memory stays low); shards hold --blocks-per-shard blocks
each, with a model.safetensors.index.json. The output folder (under bench-data/, git-ignored)
is never committed.
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path

import numpy as np

HIDDEN, INTER, VOCAB, BLOCKS = 4096, 11008, 32000, 32
CHUNK_ROWS = 1024


def block_tensors(i: int) -> list[tuple[str, tuple[int, ...]]]:
    p = f"model.layers.{i}."
    return [
        (p + "input_layernorm.weight", (HIDDEN,)),
        (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.k_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.v_proj.weight", (HIDDEN, HIDDEN)),
        (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        (p + "post_attention_layernorm.weight", (HIDDEN,)),
        (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
        (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
        (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
    ]


def to_16bit(x: np.ndarray, code: str) -> np.ndarray:
    if code == "F16":
        return x.astype(np.float16)
    bits = x.view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest


def write_shard(
    path: Path, tensors: list[tuple[str, tuple[int, ...]]], code: str, rng: np.random.Generator
) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors:
        nbytes = int(np.prod(shape)) * 2
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for _, shape in tensors:
            if len(shape) == 1:
                fh.write(to_16bit(np.ones(shape, np.float32), code).tobytes())
                continue
            for lo in range(0, shape[0], CHUNK_ROWS):
                rows = min(CHUNK_ROWS, shape[0] - lo)
                x = rng.standard_normal((rows, shape[1]), dtype=np.float32)
                x *= 0.02
                fh.write(to_16bit(x, code).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=BLOCKS, help="decoder blocks (≤ 32)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "bench-data" / "llama7b",
    )
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--blocks-per-shard", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    code = "BF16" if args.dtype == "bf16" else "F16"
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.safetensors*"):
        old.unlink()
    groups: list[list[tuple[str, tuple[int, ...]]]] = [
        [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    ]
    for start in range(0, args.layers, args.blocks_per_shard):
        group = []
        for i in range(start, min(start + args.blocks_per_shard, args.layers)):
            group += block_tensors(i)
        groups.append(group)
    groups[-1] += [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]
    rng = np.random.default_rng(args.seed)
    weight_map = {}
    start_t = time.perf_counter()
    for s, group in enumerate(groups):
        fname = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
        write_shard(args.out / fname, group, code, rng)
        weight_map.update({name: fname for name, _ in group})
    (args.out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1)
    )
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    print(
        f"wrote {args.out}: {args.layers} blocks, {len(groups)} shards, {size / 1e9:.2f} GB "
        f"({args.dtype}) in {time.perf_counter() - start_t:.0f} s"
    )


if __name__ == "__main__":
    main()
