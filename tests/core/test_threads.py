"""The BLAS thread count the solvers run with: numpy's library's, and scipy's made to follow it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from weightspectra.core import threads


@dataclass
class FakeLib:
    filepath: str
    num_threads: int
    user_api: str = "blas"

    def set_num_threads(self, n: int) -> None:
        self.num_threads = n


@dataclass
class FakeController:
    lib_controllers: list[FakeLib]


NUMPY = "/venv/site-packages/numpy.libs/libscipy_openblas64_.so"
SCIPY = "/venv/site-packages/scipy.libs/libscipy_openblas.so"


def test_the_solvers_thread_count_is_numpys_library() -> None:
    # numpy's limited to 1, scipy's loaded later at 2: the solvers run on 1
    controller = FakeController([FakeLib(NUMPY, 1), FakeLib(SCIPY, 2)])
    assert threads.numpy_blas_threads(controller) == 1
    # numpy's not told apart: the largest
    assert threads.numpy_blas_threads(FakeController([FakeLib("/x/libopenblas.so", 3)])) == 3
    assert threads.numpy_blas_threads(FakeController([])) == 1


def test_scipys_library_follows_numpys(monkeypatch: pytest.MonkeyPatch) -> None:
    libs = [FakeLib(NUMPY, 1), FakeLib(SCIPY, 2), FakeLib("/x/libgomp.so", 4, user_api="openmp")]
    import threadpoolctl

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", lambda: FakeController(libs))
    threads.follow_numpy_blas_threads()
    assert [lib.num_threads for lib in libs] == [1, 1, 4]  # OpenMP left alone


def test_a_real_run_leaves_both_libraries_at_the_callers_limit() -> None:
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from weightspectra.core.eigen import layer_eigenvalues

    with threadpool_limits(limits=1, user_api="blas"):
        w = np.random.default_rng(0).standard_normal((1200, 1100))  # order > 1024: syrk
        from weightspectra.core import eigen

        old = eigen.GRAM_BLOCKED_ABOVE_BYTES
        eigen.GRAM_BLOCKED_ABOVE_BYTES = 1024  # take the blocked (scipy syrk) path
        try:
            layer_eigenvalues(w[None])
        finally:
            eigen.GRAM_BLOCKED_ABOVE_BYTES = old
        counts = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert counts and all(c == 1 for c in counts)
