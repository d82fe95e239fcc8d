"""The source contract: adapters found through an ordered registry; open_model only dispatches."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.enums import LayerType
from weightspectra.errors import (
    CorruptFileError,
    InputError,
    MissingDependencyError,
    ModelFileNotFoundError,
    OptionError,
    UnsupportedInputError,
)
from weightspectra.sources import (
    BUILTIN_ADAPTERS,
    Registry,
    Source,
    SourceAdapter,
    TensorEntry,
    default_registry,
    open_model,
)
from weightspectra.sources.arrays import open_arrays


@dataclass(frozen=True)
class TextMatrices:
    """A toy format: ``.mat.txt`` files of whitespace-separated numbers, one matrix each."""

    name: str = "text-matrix"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.name.endswith(".mat.txt")

    def open(self, model: object) -> Source:
        assert isinstance(model, Path)
        return open_arrays({"fc.weight": np.loadtxt(model)}, description=str(model))


@dataclass(frozen=True)
class NeedsMissingPackage:
    name: str = "needs-missing"
    extra: str | None = "nothere"
    requires: str | None = "weightspectra_no_such_package"

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and model.suffix == ".nothere"

    def open(self, model: object) -> Source:
        raise AssertionError("open must not be called when the package is missing")


def test_builtin_adapters_in_lookup_order() -> None:
    assert default_registry.names()[: len(BUILTIN_ADAPTERS)] == (
        "source",
        "keras",  # before torch-module: a torch-backend Keras model is also an nn.Module
        "torch-module",
        "numpy-dict",
        "flax-pytree",  # before torch-state-dict, which would claim nested dicts
        "torch-state-dict",
        "npz",
        "quantized-safetensors",  # before safetensors-file: it claims only quantised headers
        "safetensors-file",
        "onnx-file",
        "flax-msgpack",
        "peft-adapter",  # before the folder readers: an adapter folder holds safetensors
        "safetensors-folder",
        "gguf-file",
        "torch-folder",
        "torch-file",
    )
    for adapter in BUILTIN_ADAPTERS:
        extras = (None, "torch", "onnx", "keras", "gguf", "flax")
        assert isinstance(adapter.name, str) and adapter.extra in extras


def test_a_new_format_is_one_adapter_and_its_registration(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    w = rng.standard_normal((30, 12))
    path = tmp_path / "layer.mat.txt"
    np.savetxt(path, w)
    registry = Registry(BUILTIN_ADAPTERS)
    with pytest.raises(UnsupportedInputError, match=r"unknown file type '\.txt'"):
        open_model(path, registry=registry)
    adapter: SourceAdapter = registry.register(TextMatrices())
    assert registry.find(path) is adapter
    source = open_model(path, registry=registry)
    (entry,) = source.entries
    assert entry.layer_type is LayerType.DENSE  # typed at open time by the shared naming
    report = ws.analyze(source)
    expected = np.sort(np.linalg.svd(w, compute_uv=False) ** 2)
    np.testing.assert_allclose(report["fc"].evals, expected, rtol=1e-9)
    assert "text-matrix" not in default_registry.names()  # nothing leaked


def test_register_rejects_duplicates_bad_positions_and_non_adapters() -> None:
    registry = Registry(BUILTIN_ADAPTERS)
    with pytest.raises(OptionError, match="'npz' is registered already"):
        registry.register(next(a for a in BUILTIN_ADAPTERS if a.name == "npz"))
    with pytest.raises(OptionError, match="before='nope' names no adapter"):
        registry.register(TextMatrices(), before="nope")
    with pytest.raises(UnsupportedInputError, match=r"not a source adapter.*can_open"):
        registry.register(object())  # type: ignore[arg-type]
    registry.register(TextMatrices(), before="npz")
    assert registry.names().index("text-matrix") == registry.names().index("npz") - 1
    assert registry.unregister("text-matrix").name == "text-matrix"
    with pytest.raises(OptionError, match="no source adapter named 'text-matrix'"):
        registry.unregister("text-matrix")


def test_missing_package_of_an_adapter_is_named_with_its_extra(tmp_path: Path) -> None:
    path = tmp_path / "m.nothere"
    path.write_bytes(b"x")
    registry = Registry([NeedsMissingPackage()])
    with pytest.raises(MissingDependencyError, match=r"weightspectra\[nothere\]"):
        open_model(path, registry=registry)


def test_checks_common_to_every_format(tmp_path: Path) -> None:
    with pytest.raises(ModelFileNotFoundError, match="no such file"):
        open_model(tmp_path / "missing.safetensors")
    empty = tmp_path / "e.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_model(empty)
    with pytest.raises(InputError, match="holds no tensors"):
        open_model(Source("nothing", ()))
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"holds no \.safetensors, \.bin"):
        open_model(tmp_path / "no_weights")
    with pytest.raises(InputError, match="mapping given as a model is empty"):
        open_model({})
    pytest.importorskip("torch", reason="torch is an optional extra")
    with pytest.raises(CorruptFileError, match=r"e\.pt: not a readable PyTorch file"):
        open_model(tmp_path)  # a folder with one empty .pt file


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [(".tflite", "TFLite")],
)
def test_not_yet_supported_formats(tmp_path: Path, suffix: str, kind: str) -> None:
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"\x08\x01 not weightspectra's")
    with pytest.raises(UnsupportedInputError, match=f"{kind} files are not supported yet"):
        open_model(path)


def test_a_keras_zip_is_not_taken_for_a_torch_file(tmp_path: Path) -> None:
    pytest.importorskip("h5py", reason="h5py is the keras extra")
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:  # a .keras file is a zip, like torch.save's
        zf.writestr("metadata.json", "{}")
    with pytest.raises(CorruptFileError, match=r"m\.keras: the \.keras archive has no model"):
        open_model(path)


def test_hand_built_source_is_typed_by_naming(rng: np.random.Generator) -> None:
    w = rng.standard_normal((40, 8))
    source = Source(
        "probe",
        (
            TensorEntry("model.embed_tokens.weight", w.shape, "float64", lambda: w),
            TensorEntry("fc.weight", w.shape, "float64", lambda: w, layer_type=LayerType.DENSE),
        ),
    )
    opened = open_model(source)
    assert [e.layer_type for e in opened.entries] == [LayerType.EMBEDDING, LayerType.DENSE]
    typed = Source("typed", opened.entries)
    assert open_model(typed) is typed


_NO_TORCH = """
import sys, numpy as np, weightspectra as ws
from pathlib import Path
folder = Path(sys.argv[1])
np.savez(folder / "w.npz", a=np.ones((20, 10)))
ws.analyze({"fc.weight": np.ones((20, 10))})
ws.analyze(folder / "w.npz")
for name in ("x.onnx", "x.bin.txt"):
    (folder / name).write_bytes(b"PK\\x03\\x04 not a torch zip")
    try:
        ws.analyze(folder / name)
    except ws.WeightSpectraError:
        pass
print("torch" in sys.modules)
"""


def test_can_open_never_imports_a_framework(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[-1] == "False"
