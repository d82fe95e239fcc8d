"""Write a Llama-7B-shaped GGUF file (llama.cpp names) of random Q4_K (or Q8_0) blocks.

    .venv/bin/python benchmarks/make_gguf_checkpoint.py [--layers 1] [--type Q4_K]

Tensors (names as llama.cpp writes them): token_embd 32000×4096; per block attn_q, attn_k,
attn_v, attn_output 4096×4096, ffn_gate, ffn_up 11008×4096, ffn_down 4096×11008, attn_norm and
ffn_norm (4096, F32); output_norm; output 32000×4096. ``--layers K`` writes only K blocks (the
embeddings and the head are always there). The gguf package cannot quantise to K-quants in
Python, so the blocks are random quants with fixed scales chosen to give zero-mean weights of a
trained layer's magnitude (see ``SCALES``; their spectrum is that of a random matrix):
what is measured is reading and dequantising, which cost the same for any bytes. The file goes
under bench-data/ (git-ignored) and is never committed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES
from gguf.constants import GGMLQuantizationType as Q

HIDDEN, INTER, VOCAB, BLOCKS = 4096, 11008, 32000, 32
#: Byte offset and fp16 value of the scales in a block of each type. Q4_K decodes as
#: d·sc·q − dmin·m (q in 0..15): its twelve 6-bit scale bytes are all 0x11, which makes sc = m in
#: every sub-block, and dmin = 7.5·d centres the weights on zero, as trained weights are (random
#: mins would add a large rank-one mean and an ill-conditioned spectrum that real files lack).
D_Q4K = 0.0002
SCALES = {Q.Q4_K: ((0, D_Q4K), (2, 7.5 * D_Q4K)), Q.Q8_0: ((0, 0.0002),)}
#: Other constant bytes of a block: (start, end, value).
FILL = {Q.Q4_K: ((4, 16, 0x11),), Q.Q8_0: ()}


def block_shapes(i: int) -> list[tuple[str, tuple[int, ...]]]:
    p = f"blk.{i}."
    return [
        (p + "attn_norm.weight", (HIDDEN,)),
        (p + "attn_q.weight", (HIDDEN, HIDDEN)),
        (p + "attn_k.weight", (HIDDEN, HIDDEN)),
        (p + "attn_v.weight", (HIDDEN, HIDDEN)),
        (p + "attn_output.weight", (HIDDEN, HIDDEN)),
        (p + "ffn_norm.weight", (HIDDEN,)),
        (p + "ffn_gate.weight", (INTER, HIDDEN)),
        (p + "ffn_up.weight", (INTER, HIDDEN)),
        (p + "ffn_down.weight", (HIDDEN, INTER)),
    ]


def random_quantised(shape: tuple[int, int], qtype: Q, rng: np.random.Generator) -> np.ndarray:
    """Random blocks of ``qtype`` for a (rows, cols) tensor, with small fixed scales."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows * cols // block, type_size), dtype=np.uint8)
    for at, value in SCALES[qtype]:
        blocks[:, at : at + 2] = np.array([value], np.float16).view(np.uint8)
    for lo, hi, byte in FILL[qtype]:
        blocks[:, lo:hi] = byte
    return blocks.reshape(rows, cols // block * type_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=1, help="decoder blocks (≤ 32)")
    parser.add_argument("--type", choices=[q.name for q in SCALES], default="Q4_K")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "bench-data" / "llama7b.gguf",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    qtype = Q[args.type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (VOCAB, HIDDEN))]
    for i in range(args.layers):
        shapes += block_shapes(i)
    shapes += [("output_norm.weight", (HIDDEN,)), ("output.weight", (VOCAB, HIDDEN))]
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    writer = gguf.GGUFWriter(str(args.out), "llama")
    writer.add_block_count(args.layers)
    for name, shape in shapes:
        if len(shape) == 1:
            writer.add_tensor(name, np.ones(shape, np.float32))
        else:
            rows, cols = shape
            writer.add_tensor(name, random_quantised((rows, cols), qtype, rng), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    size = args.out.stat().st_size
    print(
        f"wrote {args.out}: {args.layers} blocks, {size / 1e9:.2f} GB ({args.type}) in "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
