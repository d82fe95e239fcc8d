"""The registry of source adapters: an ordered list that ``open_model`` asks, first match wins.

:data:`BUILTIN_ADAPTERS` lists weightspectra's own adapters, most specific first. A new format
is one module defining an adapter (see :class:`~weightspectra.sources.base.SourceAdapter`),
one line here (and its suffix out of :data:`NOT_YET`), and its tests. Other packages add theirs
at run time with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from weightspectra.errors import OptionError, UnsupportedInputError
from weightspectra.sources.arrays import NpzFile, NumpyArrays
from weightspectra.sources.base import Source, SourceAdapter
from weightspectra.sources.flax import FlaxMsgpackFile, FlaxPytree
from weightspectra.sources.gguf import GgufFile
from weightspectra.sources.keras import KerasSource
from weightspectra.sources.naming import type_entries
from weightspectra.sources.onnx import OnnxFile
from weightspectra.sources.peft import PeftAdapterFolder
from weightspectra.sources.quantized import QuantizedSafetensors
from weightspectra.sources.safetensors import SafetensorsFile, SafetensorsFolder
from weightspectra.sources.torch import TorchFile, TorchFolder, TorchModule, TorchStateDict

#: What :func:`~weightspectra.sources.open_model` accepts, for error messages.
ACCEPTED = (
    "an nn.Module, a state dict, a dict of numpy arrays, a pytree of numpy/jax arrays (Flax "
    "params), or a path to a .safetensors file (GPTQ/AWQ quantised ones too), a Flax .msgpack "
    "checkpoint, an .onnx model (external data beside it), a Keras model, .keras archive, "
    ".weights.h5 or legacy .h5 file, a PEFT LoRA adapter folder (adapter_config.json), "
    "a .pt/.pth/.bin state-dict file, a .gguf (llama.cpp) file, a .npz file, or a folder of "
    "(sharded) safetensors or pytorch_model*.bin files"
)
#: Formats recognised by suffix but not read yet: the message names them and the way round.
NOT_YET = {
    ".tflite": "TFLite",
}


@dataclass(frozen=True)
class OpenedSource:
    """Adapter for a :class:`Source` built by hand: its untyped entries are typed by the
    Hugging Face / PyTorch key naming (:mod:`weightspectra.sources.naming`)."""

    name: str = "source"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Source)

    def open(self, model: object) -> Source:
        if not isinstance(model, Source):
            raise UnsupportedInputError(
                f"the {self.name!r} source opens Source objects, got a {type(model).__name__}"
            )
        if all(e.layer_type is not None for e in model.entries):
            return model
        return Source(description=model.description, entries=type_entries(model.entries))


class Registry:
    """An ordered set of source adapters, asked in order; the first that can open a model wins.

    Parameters
    ----------
    adapters : iterable of SourceAdapter, optional
        The initial adapters, in lookup order.

    Examples
    --------
    >>> registry = Registry(BUILTIN_ADAPTERS)
    >>> registry.names()[:3]
    ('source', 'keras', 'torch-module')
    """

    def __init__(self, adapters: Iterable[SourceAdapter] = ()) -> None:
        self._adapters: list[SourceAdapter] = []
        for adapter in adapters:
            self.register(adapter)

    @property
    def adapters(self) -> tuple[SourceAdapter, ...]:
        """The adapters, in lookup order."""
        return tuple(self._adapters)

    def names(self) -> tuple[str, ...]:
        """The adapters' names, in lookup order."""
        return tuple(a.name for a in self._adapters)

    def register(self, adapter: SourceAdapter, *, before: str | None = None) -> SourceAdapter:
        """Add ``adapter`` last, or just before the adapter named ``before``.

        Returns
        -------
        SourceAdapter
            ``adapter`` itself.

        Raises
        ------
        UnsupportedInputError
            If ``adapter`` lacks ``name``, ``extra``, ``requires``, ``can_open`` or ``open``.
        OptionError
            If an adapter of that name is registered already, or ``before`` names none.
        """
        missing = [
            attr
            for attr in ("name", "extra", "requires", "can_open", "open")
            if not hasattr(adapter, attr)
        ]
        if missing or not callable(adapter.can_open) or not callable(adapter.open):
            raise UnsupportedInputError(
                f"{type(adapter).__name__} is not a source adapter (missing: "
                f"{missing or ['callable can_open/open']}); see "
                "weightspectra.sources.SourceAdapter for the contract"
            )
        names = self.names()
        if adapter.name in names:
            raise OptionError(
                f"a source adapter named {adapter.name!r} is registered already; give yours "
                f"another name, or unregister({adapter.name!r}) first"
            )
        if before is None:
            self._adapters.append(adapter)
        elif before in names:
            self._adapters.insert(names.index(before), adapter)
        else:
            raise OptionError(f"before={before!r} names no adapter; choose one of {names}")
        return adapter

    def unregister(self, name: str) -> SourceAdapter:
        """Remove and return the adapter named ``name``.

        Raises
        ------
        OptionError
            If no adapter has that name.
        """
        names = self.names()
        if name not in names:
            raise OptionError(f"no source adapter named {name!r}; registered: {names}")
        return self._adapters.pop(names.index(name))

    def find(self, model: object) -> SourceAdapter | None:
        """The first adapter whose ``can_open(model)`` is true, or ``None``."""
        return next((a for a in self._adapters if a.can_open(model)), None)


#: weightspectra's own adapters, in lookup order (the first that can open a model wins).
BUILTIN_ADAPTERS: tuple[SourceAdapter, ...] = (
    OpenedSource(),
    KerasSource(),
    TorchModule(),
    NumpyArrays(),
    FlaxPytree(),
    TorchStateDict(),
    NpzFile(),
    QuantizedSafetensors(),
    SafetensorsFile(),
    OnnxFile(),
    FlaxMsgpackFile(),
    PeftAdapterFolder(),
    SafetensorsFolder(),
    GgufFile(),
    TorchFolder(),
    TorchFile(),
)

#: The registry :func:`~weightspectra.sources.open_model` uses by default. The package's one
#: piece of module-level mutable state, on purpose: it is the plug-in point for other packages'
#: formats (as einops' backends are); tests build their own :class:`Registry` instead.
default_registry = Registry(BUILTIN_ADAPTERS)


def register(adapter: SourceAdapter, *, before: str | None = None) -> SourceAdapter:
    """Add a source adapter to the default registry (see :meth:`Registry.register`)."""
    return default_registry.register(adapter, before=before)
