"""The BLAS thread count that the eigensolvers run with, when two OpenBLAS libraries are loaded.

numpy and scipy each bundle their own OpenBLAS. numpy's runs every eigensolver weightspectra
chooses between on the CPU (its ``syevd``, and LAPACK's two-stage routine through ctypes);
scipy's runs only the blocked Gram matrix's ``syrk``, and is loaded only when a large matrix
needs it, after any thread limit in force was set. So the thread count that matters is
numpy's (:func:`numpy_blas_threads`), and scipy's is set to follow it when scipy is loaded
(:func:`follow_numpy_blas_threads`). threadpoolctl is imported only here, when called.
"""

from __future__ import annotations

from typing import Any


def _is_numpys(lib: Any) -> bool:
    path = str(getattr(lib, "filepath", "") or "").replace("\\", "/")
    return "/numpy.libs/" in path or "/numpy/" in path


def _blas_libraries(controller: Any) -> list[Any]:
    return [lib for lib in controller.lib_controllers if lib.user_api == "blas"]


def numpy_blas_threads(controller: Any | None = None) -> int:
    """Threads of numpy's BLAS library now (of the largest BLAS library if numpy's cannot be
    told apart; 1 if none is loaded). ``controller``: a kept ``ThreadpoolController``."""
    if controller is None:
        from threadpoolctl import ThreadpoolController

        controller = ThreadpoolController()
    libs = _blas_libraries(controller)
    own = [lib for lib in libs if _is_numpys(lib)]
    return max((int(lib.num_threads) for lib in (own or libs)), default=1)


def follow_numpy_blas_threads() -> None:
    """Set every other loaded BLAS library to numpy's thread count (after scipy's OpenBLAS was
    loaded under a limit set before it)."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    libs = _blas_libraries(controller)
    own = [lib for lib in libs if _is_numpys(lib)]
    if not own:
        return
    threads = max(int(lib.num_threads) for lib in own)
    for lib in libs:
        if not _is_numpys(lib) and int(lib.num_threads) != threads:
            lib.set_num_threads(threads)
