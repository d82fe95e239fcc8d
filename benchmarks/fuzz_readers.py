"""A longer fuzzing run of the safetensors, ``.pt`` and Flax msgpack readers' header handling.

    .venv/bin/python benchmarks/fuzz_readers.py [--examples 2000] [--seed 0] [--only pt]

Runs the properties of ``tests/sources/test_fuzz_readers.py`` (same strategies, same checks)
with ``--examples`` inputs each, seeded, and prints per target how many inputs opened, were
refused with a weightspectra error, or hit a crash already pinned there as an xfail (counted by
exception type). Any other outcome (another exception, an entry claiming more than the file
holds, an input slower than the deadline) stops the run with the failing input; exit code 1.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import io
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "sources"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

#: The test module holding the strategies and checks (found through the path above).
fz: Any = importlib.import_module("test_fuzz_readers")


def _st_structured(data: Any) -> tuple[str, str | None]:
    header, body = data.draw(fz.safetensors_headers())
    length = data.draw(hs.one_of(hs.none(), hs.integers(0, 2**64 - 1)))
    blob = fz.safetensors_bytes(header, body, length)
    return _st(blob, fz.known_safetensors_issue(header))


def _st_random(data: Any) -> tuple[str, str | None]:
    blob = data.draw(hs.binary(max_size=256))
    return _st(blob, fz.known_safetensors_issue(blob[8:]))


def _st_mutated(data: Any) -> tuple[str, str | None]:
    blob = data.draw(fz.mutated(fz._valid_safetensors()))
    length = int.from_bytes(blob[:8].ljust(8, b"\0"), "little")
    return _st(blob, fz.known_safetensors_issue(blob[8 : 8 + length]))


def _st(blob: bytes, known: str | None) -> tuple[str, str | None]:
    outcome = fz.check_safetensors(blob, known=known)
    return outcome, known if outcome == "known" else None


def _pt(blob: bytes) -> tuple[str, str | None]:
    outcome = fz.check_pt(blob)
    if outcome != "known":
        return outcome, None
    try:
        fz.check_pt(blob, known=False)
    except fz.OversizeClaimError:
        return outcome, "claims more elements than the file has bytes"
    except fz.LoadCrashError:
        return outcome, "empty tensor with a negative or huge dimension fails at load"
    except fz.PT_FINDING_TYPES as exc:
        return outcome, f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins.")
    return outcome, "not reproduced"


def _pt_mutated(data: Any) -> tuple[str, str | None]:
    return _pt(data.draw(fz.mutated(fz._VALID_PT())))


def _pt_pickle(data: Any) -> tuple[str, str | None]:
    original = fz._VALID_PT()
    pickle_bytes = zipfile.ZipFile(io.BytesIO(original)).read("archive/data.pkl")
    return _pt(fz.rezip(original, data.draw(fz.mutated(pickle_bytes))))


def _pt_headers(data: Any) -> tuple[str, str | None]:
    return _pt(data.draw(fz.pt_headers()))


def _pt_random(data: Any) -> tuple[str, str | None]:
    return _pt(b"PK\x03\x04" + data.draw(hs.binary(max_size=200)))


def _msgpack_mutated(data: Any) -> tuple[str, str | None]:
    return fz.check_msgpack(data.draw(fz.mutated(fz._VALID_MSGPACK()))), None


def _msgpack_payloads(data: Any) -> tuple[str, str | None]:
    return fz.check_msgpack(data.draw(fz.msgpack_payloads())), None


def _msgpack_random(data: Any) -> tuple[str, str | None]:
    return fz.check_msgpack(data.draw(hs.binary(max_size=200))), None


TARGETS: dict[str, Callable[[Any], tuple[str, str | None]]] = {
    "flax msgpack: mutated valid file": _msgpack_mutated,
    "flax msgpack: hostile array payloads": _msgpack_payloads,
    "flax msgpack: random bytes": _msgpack_random,
    "safetensors: structured headers": _st_structured,
    "safetensors: random bytes": _st_random,
    "safetensors: mutated valid file": _st_mutated,
    "pt: mutated valid file": _pt_mutated,
    "pt: mutated data.pkl": _pt_pickle,
    "pt: hostile tensor records": _pt_headers,
    "pt: random bytes after the zip magic": _pt_random,
}


def run_target(
    draw_and_check: Callable[[Any], tuple[str, str | None]], examples: int, seed: int
) -> tuple[collections.Counter[str], float]:
    """Run one target for ``examples`` inputs; the tally of outcomes and the seconds taken."""
    tally: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=examples,
        deadline=fz.DEADLINE_MS,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(hs.data())
    def prop(data: Any) -> None:
        outcome, detail = draw_and_check(data)
        tally[outcome if detail is None else f"{outcome}: {detail}"] += 1

    start = time.perf_counter()
    seeded: Any = hypothesis_seed(seed)(prop)
    seeded()
    return tally, time.perf_counter() - start


def hypothesis_seed(seed: int) -> Any:
    from hypothesis import seed as seed_decorator

    return seed_decorator(seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed")
    parser.add_argument("--only", default="", help="run the targets whose name contains this")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)  # torch's note on unusual pickle protocols
    # the first torch.load and msgpack import cost seconds: pay them before the timed examples
    fz.check_pt(fz._VALID_PT(), known=False)
    fz.check_msgpack(fz._VALID_MSGPACK())
    total = 0
    for name, target in TARGETS.items():
        if args.only not in name:
            continue
        try:
            tally, seconds = run_target(target, args.examples, args.seed)
        except Exception as exc:  # the failing input, as hypothesis reports it
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            for sub in getattr(exc, "exceptions", [exc]):
                print(f"  {type(sub).__name__}: {str(sub)[:2000]}")
            return 1
        tried = sum(tally.values())
        total += tried
        detail = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
        print(f"{name}: {tried} inputs in {seconds:.1f}s ({detail})")
    print(f"total: {total} inputs, no unexpected outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
