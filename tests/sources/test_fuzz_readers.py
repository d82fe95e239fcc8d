"""Fuzzing the header handling of the safetensors reader and the ``.pt`` state-dict reader.

Every input must either open (and then load each tensor it lists) or raise a
:class:`~weightspectra.errors.WeightSpectraError`; no other exception, no hang (inputs are a few
KB and each example has a deadline), and no allocation beyond the file's own size (an entry that
opens must fit the bytes the file holds, so a header claiming 10^12 elements cannot allocate).

The suite runs a small, derandomised budget; ``benchmarks/fuzz_readers.py --examples N`` runs
the same properties longer. The crashes fuzzing found (non-string dtypes, shapes that overflow
or wrap int64, negative dimensions, torch's unpickler errors on corrupt pickles, tensors that do
not fit their storage) are kept below as regression cases: each must now be a weightspectra
error.
"""

from __future__ import annotations

import io
import json
import math
import struct
import tempfile
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weightspectra.errors import WeightSpectraError
from weightspectra.sources import safetensors as st

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

#: The suite's budget per property (the benchmark script runs more).
SUITE_EXAMPLES = 150
#: Per-example deadline: a few-KB input taking longer is a hang in the making (generous: the
#: suite shares its cores).
DEADLINE_MS = 5000
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
ITEMSIZE |= {"U8": 1, "BOOL": 1}


def suite_settings(examples: int = SUITE_EXAMPLES) -> settings:
    return settings(
        derandomize=True,
        max_examples=examples,
        deadline=DEADLINE_MS,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextmanager
def scratch(suffix: str) -> Iterator[Path]:
    """A fresh file path per example (hypothesis forbids function-scoped tmp_path fixtures)."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / f"fuzz{suffix}"


# --- safetensors ----------------------------------------------------------------------------


def safetensors_bytes(header: bytes, data: bytes, length: int | None = None) -> bytes:
    """A safetensors file: the 8-byte header length (``length`` if given), header, data."""
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def check_safetensors(blob: bytes) -> str:
    """Open ``blob`` as a safetensors file and load every tensor; the outcome in one word.

    Returns ``"opened"`` or ``"error"`` (a weightspectra error). Raises AssertionError for any
    other exception, or an opened entry whose declared size exceeds the file.
    """
    with scratch(".safetensors") as path:
        path.write_bytes(blob)
        try:
            st.read_header(path)
            source = st.open_file(path)
            for entry in source.entries:
                if not entry.is_float:
                    continue
                declared = math.prod(entry.shape) * ITEMSIZE.get(entry.dtype.upper()[:1], 1)
                assert declared <= len(blob), (entry.key, entry.shape, len(blob))
                try:
                    loaded = entry.load()
                except WeightSpectraError:
                    continue
                assert loaded.shape == entry.shape
        except WeightSpectraError:
            return "error"
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc} on {blob[:200]!r}") from exc
    return "opened"


_DIM = hs.one_of(
    hs.integers(0, 8),
    hs.integers(-3, 2**40),
    hs.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, 10**12, 10**30]),
    hs.floats(allow_nan=True, allow_infinity=True),
    hs.booleans(),
    hs.text(max_size=3),
    hs.none(),
)
_INFO_VALUE = hs.one_of(hs.integers(-5, 2**65), hs.text(max_size=4), hs.none(), hs.booleans())


@hs.composite
def safetensors_headers(draw: Any) -> tuple[bytes, bytes]:
    """A JSON header of a few entries, mostly well-formed, with hostile values mixed in."""
    data = draw(hs.binary(max_size=96))
    table: dict[str, Any] = {}
    for i in range(draw(hs.integers(0, 4))):
        shape = draw(hs.lists(_DIM, max_size=4))
        begin = draw(hs.one_of(hs.integers(0, len(data)), _INFO_VALUE))
        end = draw(hs.one_of(hs.integers(0, len(data)), _INFO_VALUE))
        info: dict[str, Any] = {
            "dtype": draw(
                hs.one_of(
                    hs.sampled_from([*ITEMSIZE, "F8_E4M3", "C64", "str"]),
                    _INFO_VALUE,
                    hs.lists(hs.integers(), max_size=1),
                    hs.dictionaries(hs.text(max_size=1), hs.integers(), max_size=1),
                )
            ),
            "shape": shape if draw(hs.booleans()) else draw(_INFO_VALUE),
            "data_offsets": [begin, end] if draw(hs.booleans()) else draw(hs.lists(_DIM)),
        }
        for field in draw(hs.sets(hs.sampled_from(["dtype", "shape", "data_offsets"]))):
            if draw(hs.integers(0, 3)) == 0:
                del info[field]
        table[f"t{i}.weight"] = info
    if draw(hs.booleans()):
        table["__metadata__"] = draw(hs.one_of(hs.dictionaries(hs.text(), hs.text()), _INFO_VALUE))
    text = json.dumps(table, allow_nan=True).encode()
    return text, data


@suite_settings()
@given(safetensors_headers(), hs.one_of(hs.none(), hs.integers(0, 2**64 - 1)))
def test_safetensors_structured_headers(case: tuple[bytes, bytes], length: int | None) -> None:
    header, data = case
    blob = safetensors_bytes(header, data, length)
    check_safetensors(blob)


@suite_settings()
@given(hs.binary(max_size=256))
def test_safetensors_random_bytes(blob: bytes) -> None:
    check_safetensors(blob)


def _valid_safetensors() -> bytes:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32).tobytes()
    b = rng.standard_normal((2, 2)).astype(np.float16).tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "a.weight": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, len(a)]},
        "b.weight": {"dtype": "F16", "shape": [2, 2], "data_offsets": [len(a), len(a) + len(b)]},
    }
    return safetensors_bytes(json.dumps(header).encode(), a + b)


@hs.composite
def mutated(draw: Any, original: bytes) -> bytes:
    """``original`` truncated, with bytes overwritten, or with a random slice spliced in."""
    blob = bytearray(original)
    for _ in range(draw(hs.integers(1, 4))):
        kind = draw(hs.sampled_from(["truncate", "overwrite", "splice", "flip"]))
        at = draw(hs.integers(0, max(len(blob) - 1, 0)))
        if kind == "truncate":
            del blob[at:]
        elif kind == "overwrite":
            chunk = draw(hs.binary(min_size=1, max_size=8))
            blob[at : at + len(chunk)] = chunk
        elif kind == "splice":
            blob[at:at] = draw(hs.binary(max_size=16))
        elif blob:
            blob[at] ^= 1 << draw(hs.integers(0, 7))
    return bytes(blob)


@suite_settings()
@given(mutated(_valid_safetensors()))
def test_safetensors_mutated_valid_file(blob: bytes) -> None:
    check_safetensors(blob)


def test_safetensors_huge_claim_does_not_allocate() -> None:
    # 10^12 float32 elements claimed, a few bytes present: refused before any allocation.
    header = {
        "a.weight": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}
    }
    blob = safetensors_bytes(json.dumps(header).encode(), b"\0" * 16)
    assert check_safetensors(blob) == "error"


def _header_only(info: dict[str, Any]) -> bytes:
    return safetensors_bytes(json.dumps({"a.weight": info}, allow_nan=True).encode(), b"\0" * 8)


SAFETENSORS_FINDINGS = {
    "non-string dtype": _header_only({"dtype": [], "shape": [1], "data_offsets": [0, 4]}),
    "non-finite dimension": _header_only(
        {"dtype": "F32", "shape": [float("inf")], "data_offsets": [0, 4]}
    ),
    "dimension beyond int64": _header_only(
        {"dtype": "F32", "shape": [10**30], "data_offsets": [0, 0]}
    ),
    "product wraps to zero": _header_only(
        {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}
    ),
    "negative dimensions": _header_only(
        {"dtype": "F32", "shape": [-1, -1], "data_offsets": [0, 4]}
    ),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_FINDINGS))
def test_safetensors_finding(case: str) -> None:
    assert check_safetensors(SAFETENSORS_FINDINGS[case]) in ("opened", "error")


# --- Flax msgpack files (our own reader, fuzzed the same way) --------------------------------


def check_msgpack(blob: bytes) -> str:
    """Open ``blob`` with :func:`weightspectra.sources.flax.open_msgpack` and load every entry."""
    from weightspectra.sources.flax import open_msgpack

    with scratch(".msgpack") as path:
        path.write_bytes(blob)
        try:
            source = open_msgpack(path)
        except WeightSpectraError:
            return "error"
        except Exception as exc:
            raise AssertionError(f"open_msgpack raised {type(exc).__name__}: {exc}") from exc
        for entry in source.entries:
            if math.prod(entry.shape) > len(blob):
                raise OversizeClaimError(f"{entry.key} claims {entry.shape} in {len(blob)} bytes")
            try:
                loaded = entry.load()
            except Exception as exc:
                raise LoadCrashError(f"load raised {type(exc).__name__}: {exc}") from exc
            assert loaded.shape == entry.shape
    return "opened"


def _msgpack_module() -> Any:
    return pytest.importorskip("msgpack", reason="msgpack is the weightspectra[flax] extra")


def valid_msgpack() -> bytes:
    msgpack = _msgpack_module()

    def ext(array: np.ndarray) -> Any:
        payload = msgpack.packb([list(array.shape), array.dtype.name, array.tobytes()])
        return msgpack.ExtType(1, payload)

    tree = {
        "params": {
            "dense": {"kernel": ext(np.ones((3, 4), np.float32)), "bias": ext(np.zeros(4))},
            "emb": {"embedding": ext(np.ones((5, 2), np.float16))},
        },
        "step": 3,
    }
    packed: bytes = msgpack.packb(tree, use_bin_type=True)
    return packed


@hs.composite
def msgpack_payloads(draw: Any) -> bytes:
    """A one-leaf checkpoint whose array payload has hostile fields."""
    msgpack = _msgpack_module()
    shape = draw(hs.lists(_SMALL_OR_HUGE_MSGPACK, max_size=3))
    fields = [
        shape if draw(hs.booleans()) else draw(_MSGPACK_VALUE),
        draw(hs.sampled_from(["float32", "float64", "bfloat16", "int8", "object", "<f4", ""])),
        draw(hs.binary(max_size=64)),
    ]
    payload = msgpack.packb(fields[: draw(hs.integers(0, 3))] if draw(hs.booleans()) else fields)
    code = draw(hs.sampled_from([1, 1, 1, 2, 3, 0, 127]))
    return bytes(msgpack.packb({"fc": {"kernel": msgpack.ExtType(code, payload)}}))


_MSGPACK_VALUE = hs.one_of(  # what msgpack can encode: integers within (u)int64
    hs.integers(-5, 2**64 - 1), hs.text(max_size=4), hs.none(), hs.booleans()
)
_SMALL_OR_HUGE_MSGPACK = hs.one_of(
    hs.integers(-2, 16), hs.sampled_from([2**31, 2**40, 10**12, 2**63 - 1, 2**64 - 1])
)


@suite_settings(100)
@given(hs.data())
def test_msgpack_mutated_valid_file(data: Any) -> None:
    check_msgpack(data.draw(mutated(_VALID_MSGPACK())))


@suite_settings(100)
@given(msgpack_payloads())
def test_msgpack_hostile_payloads(blob: bytes) -> None:
    check_msgpack(blob)


@suite_settings(50)
@given(hs.binary(max_size=200))
def test_msgpack_random_bytes(blob: bytes) -> None:
    check_msgpack(blob)


# --- .pt (torch.save zip) files ------------------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch", reason="torch reads .pt files (weightspectra[torch])")


def valid_pt() -> bytes:
    torch = _torch()
    buf = io.BytesIO()
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}, buf)
    return buf.getvalue()


def check_pt(blob: bytes) -> str:
    """Open ``blob`` as a ``.pt`` file with :func:`weightspectra.sources.torch.open_file`.

    Returns ``"opened"`` or ``"error"`` (a weightspectra error); raises AssertionError for
    anything else (torch's own ``assert`` included), an entry claiming more elements than the
    file has bytes, or a load that fails with anything but a weightspectra error.
    """
    from weightspectra.sources import torch as torch_source

    with scratch(".pt") as path:
        path.write_bytes(blob)
        try:
            source = torch_source.open_file(path)
        except WeightSpectraError:
            return "error"
        except Exception as exc:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            raise AssertionError(
                f"open_file raised {type(exc).__name__}: {exc} "
                f"(at {Path(where.filename).name}:{where.lineno})"
            ) from exc
        for entry in source.entries:
            if math.prod(entry.shape) > len(blob):
                # only overlapping (e.g. zero) strides let torch accept such a claim
                raise OversizeClaimError(f"{entry.key} claims {entry.shape} in {len(blob)} bytes")
            try:
                entry.load()
            except WeightSpectraError:
                continue
            except Exception as exc:
                raise LoadCrashError(f"load raised {type(exc).__name__}: {exc}") from exc
    return "opened"


class OversizeClaimError(AssertionError):
    """An opened entry claims more elements than its file has bytes."""


class LoadCrashError(AssertionError):
    """An opened entry's ``load`` raised something other than a weightspectra error."""


def rezip(original: bytes, pickle_bytes: bytes) -> bytes:
    """``original``'s zip with its ``data.pkl`` member replaced (stored, as torch writes)."""
    src = zipfile.ZipFile(io.BytesIO(original))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = pickle_bytes if info.filename.endswith("data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return out.getvalue()


def _int_op(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple_op(values: list[int]) -> bytes:
    return b"(" + b"".join(_int_op(v) for v in values) + b"t"


def tensor_pickle(
    key: str,
    storage: str,
    record: str,
    numel: int,
    offset: int,
    shape: list[int],
    stride: list[int],
) -> bytes:
    """A protocol-2 pickle of ``{key: tensor}`` as torch.save writes it, every field chosen."""
    name = key.encode()
    return (
        b"\x80\x02}(X"
        + struct.pack("<I", len(name))
        + name
        + b"ctorch._utils\n_rebuild_tensor_v2\n(("
        + b"X\x07\x00\x00\x00storage"
        + b"ctorch\n"
        + storage.encode()
        + b"\nX"
        + struct.pack("<I", len(record))
        + record.encode()
        + b"X\x03\x00\x00\x00cpu"
        + _int_op(numel)
        + b"tQ"
        + _int_op(offset)
        + _tuple_op(shape)
        + _tuple_op(stride)
        + b"\x89ccollections\nOrderedDict\n)RtRu."
    )


_SMALL_OR_HUGE = hs.one_of(
    hs.integers(-2, 16), hs.sampled_from([2**31 - 1, 2**31, 2**40, 10**12, 2**63 - 1, 2**63, 2**64])
)


@hs.composite
def pt_headers(draw: Any) -> bytes:
    """A valid .pt zip whose data.pkl describes one tensor with hostile numbers."""
    pickle_bytes = tensor_pickle(
        key=draw(hs.sampled_from(["fc.weight", "", "a" * 40])),
        storage=draw(hs.sampled_from(["FloatStorage", "HalfStorage", "LongStorage", "Bogus"])),
        record=draw(hs.sampled_from(["0", "1", "7", "../x"])),
        numel=draw(_SMALL_OR_HUGE),
        offset=draw(_SMALL_OR_HUGE),
        shape=draw(hs.lists(_SMALL_OR_HUGE, max_size=3)),
        stride=draw(hs.lists(_SMALL_OR_HUGE, max_size=3)),
    )
    return rezip(_VALID_PT(), pickle_bytes)


def _cached(make: Callable[[], bytes]) -> Callable[[], bytes]:
    store: list[bytes] = []

    def get() -> bytes:
        if not store:
            store.append(make())
        return store[0]

    return get


_VALID_PT = _cached(valid_pt)
_VALID_MSGPACK = _cached(valid_msgpack)


@pytest.fixture(scope="module")
def torch_ready() -> None:
    """torch imported and one file read before any timed example (the first costs seconds)."""
    _torch()
    assert check_pt(_VALID_PT()) == "opened"


def test_pt_valid_file_opens(torch_ready: None) -> None:
    assert check_pt(_VALID_PT()) == "opened"


@pytest.mark.filterwarnings("ignore::UserWarning")
@suite_settings(100)
@given(hs.data())
def test_pt_mutated_valid_file(torch_ready: None, data: Any) -> None:
    check_pt(data.draw(mutated(_VALID_PT())))


@pytest.mark.filterwarnings("ignore::UserWarning")
@suite_settings(100)
@given(hs.data())
def test_pt_mutated_pickle(torch_ready: None, data: Any) -> None:
    original = _VALID_PT()
    pickle_bytes = zipfile.ZipFile(io.BytesIO(original)).read("archive/data.pkl")
    check_pt(rezip(original, data.draw(mutated(pickle_bytes))))


@pytest.mark.filterwarnings("ignore::UserWarning")
@suite_settings(100)
@given(hs.data())
def test_pt_hostile_tensor_headers(torch_ready: None, data: Any) -> None:
    check_pt(data.draw(pt_headers()))


@pytest.mark.filterwarnings("ignore::UserWarning")
@suite_settings(50)
@given(hs.binary(max_size=200))
def test_pt_random_bytes_after_zip_magic(torch_ready: None, tail: bytes) -> None:
    check_pt(b"PK\x03\x04" + tail)


def test_pt_huge_claim_does_not_allocate() -> None:
    _torch()
    # 10^12 elements over a 12-element storage: torch refuses the strides, we report it
    pickle_bytes = tensor_pickle(
        "fc.weight", "FloatStorage", "0", 10**12, 0, [10**6, 10**6], [10**6, 1]
    )
    assert check_pt(rezip(_VALID_PT(), pickle_bytes)) == "error"


def _pt_with_pickle(pickle_bytes: bytes) -> Callable[[], bytes]:
    return lambda: rezip(_VALID_PT(), pickle_bytes)


#: torch.load's own exceptions on a corrupt pickle, which ``load_file`` does not translate.
PT_LOAD_FINDINGS: dict[str, Callable[[], bytes]] = {
    "IndexError (BINPERSID on an empty stack)": _pt_with_pickle(b"\x80\x02Q."),
    "KeyError (BINGET of a missing memo)": _pt_with_pickle(b"\x80\x02h\x05."),
    "struct.error (truncated BINUNICODE length)": _pt_with_pickle(b"\x80\x02X\x01"),
    "IndexError (legacy path: zip magic damaged)": lambda: b"Q" + _VALID_PT()[1:],
    "AssertionError (a persistent id that is not a tuple)": _pt_with_pickle(b"\x80\x02K\x01Q."),
    "AttributeError (a storage type that is a string)": _pt_with_pickle(
        b"\x80\x02(X\x07\x00\x00\x00storageX\x01\x00\x00\x00FX\x01\x00\x00\x000"
        b"X\x03\x00\x00\x00cpuK\x01tQ."
    ),
    "TypeError (a stride beyond int64)": _pt_with_pickle(
        tensor_pickle("fc.weight", "FloatStorage", "0", 12, 0, [3, 4], [2**64, 1])
    ),
}
#: Tensors torch builds without complaint that do not fit their storage or numpy.
PT_STORAGE_FINDINGS: dict[str, Callable[[], bytes]] = {
    "ValueError at load (an empty tensor, other dimensions 2^40)": _pt_with_pickle(
        tensor_pickle("fc.weight", "FloatStorage", "0", 12, 0, [0, 2**40, 2**40], [1, 1, 1])
    ),
    "RuntimeError at load (shape (0, -1) opens)": _pt_with_pickle(
        tensor_pickle("fc.weight", "FloatStorage", "0", 12, 0, [0, -1], [1, 1])
    ),
    "10^12 elements over 12 (zero strides)": _pt_with_pickle(
        tensor_pickle("fc.weight", "FloatStorage", "0", 12, 0, [10**6, 10**6], [0, 0])
    ),
}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", sorted(PT_LOAD_FINDINGS))
def test_pt_load_finding(case: str) -> None:
    _torch()
    assert check_pt(PT_LOAD_FINDINGS[case]()) in ("opened", "error")


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", sorted(PT_STORAGE_FINDINGS))
def test_pt_storage_finding(case: str) -> None:
    _torch()
    assert check_pt(PT_STORAGE_FINDINGS[case]()) in ("opened", "error")
