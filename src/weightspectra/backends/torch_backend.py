"""Spectra with torch: Gram matrices and their eigenvalues on a torch device (a CUDA GPU).

The only module of weightspectra that computes with torch; it is imported only when
``device="cuda"`` or ``"auto"`` asks for it (or by tests, with ``device="cpu"``). It follows the
contract of :data:`weightspectra.core.eigen.SpectrumEngine`: a stack of equally shaped matrices
in, one ascending float64 eigenvalue array per matrix out, in the requested precision.

Memory: small stacks (conv slices, attention heads) go to the device in one batch; a matrix whose
working copy exceeds :data:`TRANSFER_BLOCK_BYTES` is sent in row blocks and
its Gram matrix accumulated on the device, so neither host nor device ever holds a float64 copy
of a whole LLM embedding.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from weightspectra.core.eigen import SpectrumEngine, check_gram_diagonal
from weightspectra.enums import Precision
from weightspectra.errors import LayerError

#: torch's intra-op thread count when this module was first imported (restored after a run that
#: changed it, see :func:`weightspectra.backends.torch_threads_kept`).
IMPORT_THREADS = torch.get_num_threads()

#: A stack whose working copy exceeds this many bytes goes to the device in row blocks of about
#: this size (larger than the CPU path's blocks: each block is one host-to-device transfer).
TRANSFER_BLOCK_BYTES = 64 * 2**20


def cuda_available() -> bool:
    """True if torch sees at least one usable CUDA device."""
    return bool(torch.cuda.is_available()) and torch.cuda.device_count() > 0


def mkl_available() -> bool:
    """True if torch's CPU linear algebra is Intel MKL (x86-64 wheels; not aarch64 ones)."""
    return bool(torch.backends.mkl.is_available())  # type: ignore[no-untyped-call]


def host_eigvalsh(gram: np.ndarray, threads: int) -> np.ndarray:
    """Ascending eigenvalues of a symmetric host matrix (lower triangle read) with torch's CPU
    LAPACK on ``threads`` threads, without copying it to torch first.

    Raises
    ------
    LayerError
        If the solver fails.
    """
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        evals = torch.linalg.eigvalsh(torch.from_numpy(gram), UPLO="L")
    except RuntimeError as exc:
        raise LayerError(
            f"torch's LAPACK failed on a {gram.shape} Gram matrix ({exc}); "
            "retry with eig_method='svd'"
        ) from exc
    out: np.ndarray = evals.numpy()
    return out


def _torch_dtype(precision: Precision) -> torch.dtype:
    return torch.float64 if precision is Precision.FLOAT64 else torch.float32


def _to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # A private, writable host copy: torch refuses to wrap read-only (memory-mapped) arrays
    # silently, and the copy is at most one block.
    native = array.dtype in (np.float16, np.float32, np.float64)  # not ml_dtypes' bfloat16
    host = torch.from_numpy(np.array(array, dtype=None if native else np.float32, order="C"))
    return host.to(device=device, dtype=dtype)


def _eigvalsh(gram: torch.Tensor, what: str) -> torch.Tensor:
    try:
        evals: torch.Tensor = torch.linalg.eigvalsh(gram)
    except RuntimeError as exc:  # torch raises RuntimeError (linalg.LinAlgError) on failure
        raise LayerError(
            f"{what}: torch eigvalsh failed on the {tuple(gram.shape)} Gram matrix ({exc}); "
            "retry with device='cpu' or eig_method='svd'"
        ) from exc
    return evals


def gram_spectra(
    stack: np.ndarray,
    precision: Precision = Precision.FLOAT64,
    what: str = "matrix",
    *,
    device: str | torch.device = "cuda",
) -> list[np.ndarray]:
    """Gram eigenvalues of each matrix of ``stack``, computed with torch on ``device``.

    Parameters
    ----------
    stack : ndarray of shape (k, rows, cols)
        Equally shaped matrices (any float dtype the host holds).
    precision : Precision
        Precision of the Gram matrix and of the eigenvalue solver on the device.
    what : str
        How to name the layer in messages.
    device : str or torch.device, default "cuda"
        Torch device; ``"cpu"`` is used by the tests to compare with the numpy engine.

    Returns
    -------
    list of ndarray
        ``k`` ascending float64 arrays of ``min(rows, cols)`` eigenvalues.

    Raises
    ------
    LayerError
        On NaN/Inf values, an overflowing Gram matrix, or a failed solver.

    Examples
    --------
    >>> import numpy as np
    >>> gram_spectra(np.diag([3.0, 2.0])[None], device="cpu")[0]
    array([4., 9.])
    """
    dev = torch.device(device)
    dtype = _torch_dtype(precision)
    _, rows, cols = stack.shape
    tall = rows >= cols
    itemsize = 8 if dtype == torch.float64 else 4
    if stack.size * itemsize <= TRANSFER_BLOCK_BYTES:
        a = _to_device(stack, dev, dtype)
        if not tall:
            a = a.mT
        gram = a.mT @ a  # (k, M, M), batched
        _check(gram, stack, what)
        evals = _eigvalsh(gram, what).to("cpu", torch.float64).numpy()
        return [np.ascontiguousarray(e) for e in evals]
    return [_blocked(matrix, dev, dtype, tall, what) for matrix in stack]


def _blocked(
    matrix: np.ndarray, dev: torch.device, dtype: torch.dtype, tall: bool, what: str
) -> np.ndarray:
    rows, cols = matrix.shape
    M, N = (cols, rows) if tall else (rows, cols)
    itemsize = 8 if dtype == torch.float64 else 4
    step = max(1, TRANSFER_BLOCK_BYTES // (M * itemsize))
    gram = torch.zeros((M, M), dtype=dtype, device=dev)
    for lo in range(0, N, step):
        part = matrix[lo : lo + step] if tall else matrix[:, lo : lo + step].T
        x = _to_device(part, dev, dtype)  # (b, M)
        gram.addmm_(x.mT, x)
        del x
    _check(gram[None], matrix, what)
    return np.asarray(_eigvalsh(gram, what).to("cpu", torch.float64).numpy())


def _check(gram: torch.Tensor, host: np.ndarray, what: str) -> None:
    diagonal = torch.diagonal(gram, dim1=-2, dim2=-1).reshape(-1)
    if bool(torch.isfinite(diagonal.sum())):
        return
    check_gram_diagonal(diagonal.to("cpu").numpy(), host, what)


def make_engine(device: str | torch.device = "cuda") -> SpectrumEngine:
    """A :data:`~weightspectra.core.eigen.SpectrumEngine` computing on ``device``."""
    return functools.partial(gram_spectra, device=device)
