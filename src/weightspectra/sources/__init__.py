"""Input adapters: each turns one kind of model into named, typed tensors, loaded lazily.

Every kind of input is a :class:`SourceAdapter` found through a :class:`Registry`;
:func:`open_model` only dispatches. Frameworks are imported only inside the adapter that reads
them, and only when the input is of that kind (detected through ``sys.modules``, without
importing).
"""

from weightspectra.sources.base import Source, SourceAdapter, TensorEntry
from weightspectra.sources.open import open_model
from weightspectra.sources.registry import (
    BUILTIN_ADAPTERS,
    Registry,
    default_registry,
    register,
)

__all__ = [
    "BUILTIN_ADAPTERS",
    "Registry",
    "Source",
    "SourceAdapter",
    "TensorEntry",
    "default_registry",
    "open_model",
    "register",
]
