"""Input adapters: each turns one kind of model into named tensors, loaded lazily.

Frameworks are imported only inside the adapter that reads them, and only when the input is
of that kind (detected through ``sys.modules``, without importing).
"""

from weightspectra.sources.base import Source, TensorEntry
from weightspectra.sources.open import open_model

__all__ = ["Source", "TensorEntry", "open_model"]
