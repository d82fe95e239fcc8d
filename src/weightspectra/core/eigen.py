"""Eigenvalues of weight correlation matrices (metrics.md §2).

λᵢ = σᵢ², the squared singular values of W, computed as the eigenvalues of the smaller Gram
matrix (WᵀW or WWᵀ) by default, or by a full SVD (exact, for tests and tiny eigenvalues).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from weightspectra.enums import EigenMethod, Precision
from weightspectra.errors import LayerError, NumericalWarning

#: Negative Gram eigenvalues up to this many ``M·eps·λ_max`` are round-off and are clipped to 0;
#: larger ones mean the Gram matrix was not symmetric positive semi-definite: an error.
NEGATIVE_EVAL_ROUNDOFF = 100.0

#: A matrix whose working-precision copy would exceed this many bytes is never converted whole:
#: its Gram matrix is accumulated from row blocks (bounded memory for LLM embeddings and heads).
#: Smaller matrices take the one-shot path.
GRAM_BLOCKED_ABOVE_BYTES = 64 * 2**20

#: Size of those row blocks. Small blocks stay in cache while they are converted and multiplied:
#: with 4 MiB blocks Gram + eigvalsh took 0.86× the time of 64 MiB blocks on MiniLM's 30522×384
#: embedding and 0.98× on 11008×4096 (one BLAS thread; benchmarks/bench_internals.py).
GRAM_BLOCK_BYTES = 4 * 2**20

#: Gram matrices up to this order are summed from their blocks with numpy's matmul (its own
#: syrk), larger ones with scipy's in-place ``syrk`` (see :func:`_accumulate_gram`).
NUMPY_ACCUMULATE_MAX_ORDER = 1024

#: A spectrum engine: ``(stack (k, rows, cols), precision, what) -> k ascending eigenvalue
#: arrays``. :func:`numpy_spectra` is the default; backends (torch) provide others.
SpectrumEngine = Callable[[np.ndarray, Precision, str], list[np.ndarray]]

#: A symmetric eigenvalue solver: the ascending eigenvalues of a symmetric matrix of which only
#: the lower triangle need be filled. :func:`lapack_eigvalsh` is the default.
SymmetricSolver = Callable[[np.ndarray], np.ndarray]


def lapack_eigvalsh(gram: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of ``gram`` (lower triangle read) with numpy's LAPACK ``syevd``.

    numpy's, not scipy's: measured 1.7× faster on this project's machines (its bundled OpenBLAS
    build).
    """
    return np.linalg.eigvalsh(gram, UPLO="L")


def _bad_values_error(what: str, n_nan: int, n_inf: int, size: int) -> LayerError:
    return LayerError(
        f"{what} contains {n_nan} NaN and {n_inf} infinite values out of {size}; "
        "its spectrum is undefined (check the checkpoint or the training run that wrote it)"
    )


def _all_zeros_error(what: str) -> LayerError:
    return LayerError(f"{what} is all zeros: it has no spectrum (an uninitialised layer?)")


def _overflow_error(what: str, dtype: np.dtype) -> LayerError:
    return LayerError(
        f"{what}: its Gram matrix overflows {dtype} (squared column norms beyond the "
        "range of the type); retry with precision='float64' or eig_method='svd'"
    )


def check_finite_nonzero(stack: np.ndarray, what: str) -> None:
    """Raise :class:`LayerError` if ``stack`` has NaN/Inf values or is entirely zero.

    Parameters
    ----------
    stack : ndarray
        The matrices of one layer, any shape.
    what : str
        How to name the layer in the message.
    """
    finite = np.isfinite(stack)
    if not finite.all():
        n_nan = int(np.isnan(stack).sum())
        n_inf = int(stack.size - finite.sum() - n_nan)
        raise _bad_values_error(what, n_nan, n_inf, stack.size)
    if not np.any(stack):
        raise _all_zeros_error(what)


def check_gram_diagonal(diagonal: np.ndarray, matrix: np.ndarray, what: str) -> None:
    """Raise :class:`LayerError` unless a Gram diagonal shows a finite matrix.

    The diagonal holds the squared column norms, so one non-finite entry of ``matrix`` makes it
    non-finite: checking it costs O(M) instead of a pass over the matrix. Only on failure is
    ``matrix`` itself inspected, to name the cause (NaN/Inf values, or an overflow of the type).

    Parameters
    ----------
    diagonal : ndarray of shape (M,)
        Diagonal of the Gram matrix of ``matrix``.
    matrix : ndarray
        The matrix (or stack) the Gram matrix came from.
    what : str
        How to name the layer in the message.
    """
    if np.isfinite(np.sum(diagonal, dtype=np.float64)):
        return
    if not np.isfinite(matrix).all():
        check_finite_nonzero(matrix, what)
    raise _overflow_error(what, diagonal.dtype)


def gram_eigenvalues(
    matrix: np.ndarray,
    precision: Precision = Precision.FLOAT64,
    what: str = "matrix",
    solver: SymmetricSolver = lapack_eigvalsh,
) -> np.ndarray:
    """Eigenvalues of the smaller Gram matrix of one 2-D ``matrix``, ascending, unclipped.

    A matrix whose converted copy would exceed :data:`GRAM_BLOCKED_ABOVE_BYTES` is converted and
    accumulated into the Gram matrix block by block (``syrk``), then diagonalised, so memory
    stays near the input plus two Gram-sized buffers (the matrix and LAPACK's copy of it).

    Parameters
    ----------
    matrix : ndarray of shape (rows, cols)
    precision : Precision
        Floating type in which the Gram matrix is formed and diagonalised.
    what : str
        How to name the layer in messages.
    solver : SymmetricSolver
        Diagonalises the Gram matrix (default: numpy's LAPACK).

    Returns
    -------
    ndarray of shape (min(rows, cols),), float64

    Raises
    ------
    LayerError
        If ``matrix`` has NaN/Inf values, or its Gram matrix overflows ``precision``.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.diag([3.0, 2.0])
    >>> gram_eigenvalues(w)
    array([4., 9.])
    """
    dtype = np.dtype(np.float64 if precision is Precision.FLOAT64 else np.float32)
    if matrix.dtype != dtype and matrix.size * dtype.itemsize > GRAM_BLOCKED_ABOVE_BYTES:
        return _blocked_gram_eigenvalues(matrix, dtype, what, solver)
    a = np.asarray(matrix, dtype=dtype)
    if a.shape[0] < a.shape[1]:
        a = a.T
    # numpy dispatches ``a.T @ a`` on one buffer to the symmetric rank-k BLAS kernel (syrk).
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is diagnosed just below
        gram = a.T @ a
    check_gram_diagonal(np.diagonal(gram), matrix, what)
    return solver(gram).astype(np.float64, copy=False)


def _blocked_gram_eigenvalues(
    matrix: np.ndarray, dtype: np.dtype, what: str, solver: SymmetricSolver
) -> np.ndarray:
    rows, cols = matrix.shape
    tall = rows >= cols
    M, N = (cols, rows) if tall else (rows, cols)
    step = max(1, GRAM_BLOCK_BYTES // (M * dtype.itemsize))
    parts = (
        matrix[lo : lo + step] if tall else matrix[:, lo : lo + step] for lo in range(0, N, step)
    )
    gram = _accumulate_gram(parts, M, dtype, tall)
    check_gram_diagonal(np.diagonal(gram), matrix, what)
    # only the lower triangle, the one syrk filled, is read
    return solver(gram).astype(np.float64, copy=False)


def _scipy_blas() -> Any:
    """scipy's BLAS module, imported on first use (only big matrices need it), its OpenBLAS
    then set to the thread count numpy's has now: a limit set before scipy was loaded (the
    caller's, or the workers' budget) would otherwise not reach it, and two workers would each
    run syrk on every core."""
    first = "scipy.linalg.blas" not in sys.modules
    from scipy.linalg import blas

    if first:
        from weightspectra.core.threads import follow_numpy_blas_threads

        follow_numpy_blas_threads()
    return blas


def _accumulate_gram(
    parts: Iterable[np.ndarray], order: int, dtype: np.dtype, tall: bool
) -> np.ndarray:
    """The Gram matrix (``order`` on a side; at least its lower triangle) summed from the
    row blocks (``tall``: ``Σ XᵢᵀXᵢ``) or column blocks (``Σ XᵢXᵢᵀ``) of one matrix, each
    block converted to ``dtype`` only when its turn comes."""
    if order <= NUMPY_ACCUMULATE_MAX_ORDER:
        # numpy's ``x.T @ x`` is syrk too, plus an add and a symmetric fill of order² per
        # block: a few percent at these orders, and no scipy to import (0.1-0.15 s, a fifth
        # of a whole MiniLM run, whose 30522×384 embeddings take this path).
        total = np.zeros((order, order), dtype=dtype)
        for part in parts:
            block = np.asarray(part, dtype=dtype)
            total += block.T @ block if tall else block @ block.T
            del block
        return total
    blas = _scipy_blas()

    # scipy's syrk accumulates in place (numpy's ``x.T @ x`` would need an add and a symmetric
    # copy per block). scipy ships its own OpenBLAS, and switching between two multithreaded
    # BLAS libraries leaves the idle one's threads spinning for a while: fine once per large
    # matrix, which is why only large ones take this path (sending every matrix over 4 MiB
    # here made MiniLM 1.71× slower on 2 BLAS threads; benchmarks/bench_internals.py).
    syrk = blas.ssyrk if dtype == np.float32 else blas.dsyrk
    gram = np.zeros((order, order), dtype=dtype, order="F")
    for part in parts:
        block = np.asarray(part, dtype=dtype)  # (b, M) if tall else (M, b), C order
        # lower triangle of gram += Xᵀ·X for X = block (tall) or blockᵀ (wide); BLAS wants
        # Fortran order, which the transpose of a C-ordered block already is.
        trans = 0 if tall else 1
        gram = syrk(1.0, block.T, beta=1.0, c=gram, trans=trans, lower=1, overwrite_c=1)
        del block
    return gram


#: Reads rows ``lo:hi`` of one 2-D matrix as a floating array of shape ``(hi - lo, cols)``
#: (a source that converts its tensors anyway, such as a dequantising GGUF reader).
RowReader = Callable[[int, int], np.ndarray]

#: Rows are read from a :data:`RowReader` in slices of about this many float32 bytes, and fed to
#: ``syrk`` in :data:`GRAM_BLOCK_BYTES` blocks of the working precision.
STREAM_READ_BYTES = 16 * 2**20


def _row_chunks(
    read_rows: RowReader, rows: int, cols: int, multiple: int = 1
) -> Iterator[np.ndarray]:
    """Rows of the matrix from ``read_rows`` in order, about :data:`STREAM_READ_BYTES` of
    float32 at a time, each chunk a whole number of ``multiple`` rows (but the last)."""
    per_chunk = max(1, STREAM_READ_BYTES // (4 * max(1, cols) * multiple)) * multiple
    for lo in range(0, rows, per_chunk):
        hi = min(lo + per_chunk, rows)
        chunk = read_rows(lo, hi)
        if chunk.shape != (hi - lo, cols):
            raise LayerError(
                f"the source returned rows {lo}:{hi} with shape {chunk.shape}, expected "
                f"{(hi - lo, cols)} (a bug in the source adapter)"
            )
        yield chunk


def streamed_row_chunks(read_rows: RowReader, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """All rows of a ``shape`` matrix from ``read_rows``, in order, a few megabytes at a time
    (what the cache hashes and the Gram matrix sums, without one whole converted copy)."""
    return _row_chunks(read_rows, shape[0], shape[1])


def streamed_gram_eigenvalues(
    read_rows: RowReader,
    shape: tuple[int, int],
    precision: Precision = Precision.FLOAT64,
    what: str = "matrix",
    solver: SymmetricSolver = lapack_eigvalsh,
) -> np.ndarray:
    """Eigenvalues of ``WᵀW`` for a tall matrix ``W`` that is read row block by row block.

    The same numbers as :func:`gram_eigenvalues` on the whole matrix (the same ``syrk``
    accumulation), while memory holds only the Gram matrix, the solver's copy of it and one
    block: a 32000×4096 embedding stored quantised never exists as one float array.

    Parameters
    ----------
    read_rows : RowReader
        Returns rows ``lo:hi`` of the matrix.
    shape : (rows, cols)
        The matrix's shape; ``rows >= cols`` (the Gram matrix of a wide matrix needs all of its
        rows for every entry: load it whole instead).
    precision, what, solver
        As for :func:`gram_eigenvalues`.

    Returns
    -------
    ndarray of shape (cols,), float64, ascending, unclipped.

    Raises
    ------
    LayerError
        If the matrix has NaN/Inf values or its Gram matrix overflows ``precision``.
    ValueError
        If ``shape`` is wide.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.diag([3.0, 2.0])
    >>> streamed_gram_eigenvalues(lambda lo, hi: w[lo:hi], (2, 2))
    array([4., 9.])
    """
    rows, cols = shape
    if rows < cols:
        raise ValueError(f"streamed Gram matrices need a tall matrix (rows >= cols), got {shape}")
    dtype = np.dtype(np.float64 if precision is Precision.FLOAT64 else np.float32)
    step = max(1, GRAM_BLOCK_BYTES // (cols * dtype.itemsize))

    def blocks() -> Iterator[np.ndarray]:
        # chunks of whole blocks: the blocks are those of the whole matrix's blocked path, so
        # the Gram matrix is the same sum, term for term
        for chunk in _row_chunks(read_rows, rows, cols, multiple=step):
            for lo in range(0, chunk.shape[0], step):
                yield chunk[lo : lo + step]

    with np.errstate(over="ignore", invalid="ignore"):  # overflow is diagnosed just below
        gram = _accumulate_gram(blocks(), cols, dtype, tall=True)
    diagonal = np.diagonal(gram)
    if not np.isfinite(np.sum(diagonal, dtype=np.float64)):
        _raise_bad_values(_row_chunks(read_rows, rows, cols), rows * cols, diagonal.dtype, what)
    return solver(gram).astype(np.float64, copy=False)


def _raise_bad_values(chunks: Iterable[np.ndarray], size: int, dtype: np.dtype, what: str) -> None:
    """The :func:`check_gram_diagonal` error of a streamed matrix: NaN/Inf counted block by
    block, else an overflow of ``dtype``."""
    n_nan = n_inf = 0
    for chunk in chunks:
        n_nan += int(np.isnan(chunk).sum())
        n_inf += int(np.isinf(chunk).sum())
    if n_nan or n_inf:
        raise _bad_values_error(what, n_nan, n_inf, size)
    raise _overflow_error(what, dtype)


def streamed_layer_eigenvalues(
    read_rows: RowReader,
    shape: tuple[int, int],
    *,
    precision: Precision = Precision.FLOAT64,
    eig_scale: float = 1.0,
    normalize_by: int | None = None,
    what: str = "matrix",
    solver: SymmetricSolver = lapack_eigvalsh,
) -> np.ndarray:
    """:func:`layer_eigenvalues` of one tall 2-D matrix read by rows
    (:func:`streamed_gram_eigenvalues`): the same ESD, without the whole matrix in memory.

    Raises
    ------
    LayerError
        As :func:`layer_eigenvalues` (NaN/Inf values, an all-zero matrix, a Gram matrix far
        from positive semi-definite).
    """
    evals = streamed_gram_eigenvalues(read_rows, shape, precision, what, solver)
    if not evals[-1] > 0.0 and not any(np.any(c) for c in _row_chunks(read_rows, *shape)):
        raise _all_zeros_error(what)
    return _finish(evals, shape[0], shape[1], precision, eig_scale, normalize_by, what)


def numpy_spectra(
    stack: np.ndarray,
    precision: Precision,
    what: str,
    solver: SymmetricSolver = lapack_eigvalsh,
) -> list[np.ndarray]:
    """The default :data:`SpectrumEngine`: :func:`gram_eigenvalues` of each matrix in turn.

    Measured on this project's machines, numpy's batched ``matmul``/``eigvalsh`` on a stack is
    not faster than this loop (it gives up the symmetric ``syrk`` kernel), so stacks are looped.
    """
    return [gram_eigenvalues(matrix, precision, what, solver) for matrix in stack]


def svd_eigenvalues(matrix: np.ndarray) -> np.ndarray:
    """Squared singular values of ``matrix`` by a full float64 SVD, ascending (exact path)."""
    s = np.linalg.svd(np.asarray(matrix, dtype=np.float64), compute_uv=False)
    return np.sort(s * s)


def layer_eigenvalues(
    stack: np.ndarray,
    *,
    method: EigenMethod = EigenMethod.GRAM,
    precision: Precision = Precision.FLOAT64,
    eig_scale: float = 1.0,
    normalize_by: int | None = None,
    what: str = "matrix",
    engine: SpectrumEngine | None = None,
) -> np.ndarray:
    """Pooled, sorted eigenvalues of a stack of equally shaped matrices (one ESD).

    Parameters
    ----------
    stack : ndarray of shape (k, rows, cols)
        The matrices of one layer (k = 1 except for pooled convolution slices).
    method : EigenMethod
        Gram matrix (default) or full SVD.
    precision : Precision
        Precision of the Gram path (the SVD path is always float64).
    eig_scale : float
        Every eigenvalue is multiplied by this (the convolution scaling of metrics.md §2).
    normalize_by : int, optional
        If given, eigenvalues are divided by it (``N`` for the normalised convention).
    what : str
        Name of the layer, for messages.
    engine : SpectrumEngine, optional
        Computes the Gram eigenvalues of the stack (default :func:`numpy_spectra`; a backend
        such as torch on a GPU passes its own). Ignored by the SVD method.

    Returns
    -------
    ndarray of shape (k · min(rows, cols),), float64, ascending, all ≥ 0.

    Raises
    ------
    LayerError
        On NaN/Inf values, an all-zero stack, or a Gram matrix far from positive semi-definite.

    Warns
    -----
    NumericalWarning
        When tiny negative round-off eigenvalues are clipped to zero.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (k, rows, cols) stack, got shape {stack.shape}")
    if method is EigenMethod.SVD:
        check_finite_nonzero(stack, what)
        parts = [svd_eigenvalues(matrix) for matrix in stack]
    else:
        try:
            parts = (engine or numpy_spectra)(stack, precision, what)
        except LayerError:
            check_finite_nonzero(stack, what)  # counts the bad values of the whole stack
            raise
    evals = np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]
    if method is not EigenMethod.SVD and not evals[-1] > 0.0:
        check_finite_nonzero(stack, what)  # names an all-zero stack; else λ underflowed to 0
    return _finish(evals, stack.shape[1], stack.shape[2], precision, eig_scale, normalize_by, what)


def _finish(
    evals: np.ndarray,
    rows: int,
    cols: int,
    precision: Precision,
    eig_scale: float,
    normalize_by: int | None,
    what: str,
) -> np.ndarray:
    """Round-off clipped, scaled and normalised eigenvalues (the end of every ESD path)."""
    evals = _clip_roundoff(evals, rows, cols, precision, what)
    if eig_scale != 1.0:
        evals = evals * eig_scale
    if normalize_by is not None:
        evals = evals / float(normalize_by)
    return evals


def _clip_roundoff(
    evals: np.ndarray, rows: int, cols: int, precision: Precision, what: str
) -> np.ndarray:
    lowest = float(evals[0])
    if lowest >= 0.0:
        return evals
    eps = float(np.finfo(np.float64 if precision is Precision.FLOAT64 else np.float32).eps)
    limit = NEGATIVE_EVAL_ROUNDOFF * max(rows, cols) * eps * float(evals[-1])
    if -lowest > limit:
        raise LayerError(
            f"{what}: Gram eigenvalue {lowest:.3e} is far below zero (round-off bound "
            f"{-limit:.3e}); the matrix is numerically unusable in {precision.value}: "
            "retry with precision='float64' or eig_method='svd'"
        )
    warnings.warn(
        "tiny negative Gram eigenvalues (round-off of exact zeros) were clipped to 0",
        NumericalWarning,
        stacklevel=4,
    )
    clipped: np.ndarray = np.maximum(evals, 0.0)
    return clipped


def shuffled_entries(stack: np.ndarray, seed: int) -> np.ndarray:
    """``stack`` with all its entries permuted at random (seeded): the randomised matrix whose
    ESD shows correlation traps (metrics.md §5). Same shape; the Frobenius norm is kept.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.arange(6.0).reshape(1, 2, 3)
    >>> sorted(shuffled_entries(w, 0).ravel()) == sorted(w.ravel())
    True
    """
    rng = np.random.default_rng(seed)
    return rng.permutation(np.asarray(stack).ravel()).reshape(stack.shape)
