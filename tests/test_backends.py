"""Spectrum backends: torch (run on the CPU here) equals numpy; device resolution and errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import weightspectra as ws
from weightspectra import backends
from weightspectra.analysis import analyze_tensor, plan
from weightspectra.backends import Backend, cpu_solver, resolve_backend
from weightspectra.core.eigen import lapack_eigvalsh, layer_eigenvalues, numpy_spectra
from weightspectra.errors import LayerError, OptionError
from weightspectra.options import Device, Options, Precision
from weightspectra.sources import open_model

torch = pytest.importorskip("torch")
torch_backend = pytest.importorskip("weightspectra.backends.torch_backend")
MKL = backends.MKL_MIN_ORDER
needs_mkl = pytest.mark.skipif(not torch_backend.mkl_available(), reason="torch without MKL")


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max() / y[-1]) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("shape", [(1, 300, 120), (1, 120, 300), (9, 32, 16), (4, 50, 50)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_cpu_equals_numpy_float64(
    rng: np.random.Generator, shape: tuple[int, int, int], dtype: type
) -> None:
    stack = rng.standard_t(3.0, size=shape).astype(dtype)
    ours = torch_backend.gram_spectra(stack, Precision.FLOAT64, "w", device="cpu")
    ref = numpy_spectra(stack, Precision.FLOAT64, "w")
    assert [e.shape for e in ours] == [e.shape for e in ref]
    assert all(e.dtype == np.float64 and np.all(np.diff(e) >= 0) for e in ours)
    assert _rel(ours, ref) < 1e-12


def test_torch_cpu_float32_within_float32_tolerance(rng: np.random.Generator) -> None:
    stack = rng.standard_normal((2, 400, 150)).astype(np.float32)
    ours = torch_backend.gram_spectra(stack, Precision.FLOAT32, "w", device="cpu")
    ref = numpy_spectra(stack, Precision.FLOAT64, "w")
    assert _rel(ours, ref) < 1e-5


@pytest.mark.parametrize("shape", [(700, 90), (90, 700)])
def test_torch_blocked_path_equals_numpy(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    monkeypatch.setattr(torch_backend, "TRANSFER_BLOCK_BYTES", 64 * 1024)  # forces ~10 row blocks
    stack = rng.standard_normal((1, *shape)).astype(np.float32)
    ours = torch_backend.gram_spectra(stack, Precision.FLOAT64, "w", device="cpu")
    assert _rel(ours, numpy_spectra(stack, Precision.FLOAT64, "w")) < 1e-12


def test_torch_backend_rejects_non_finite(rng: np.random.Generator) -> None:
    stack = rng.standard_normal((3, 20, 10))
    stack[1, 2, 3] = np.inf
    with pytest.raises(LayerError, match="1 infinite values"):
        layer_eigenvalues(stack, what="layer x", engine=torch_backend.make_engine("cpu"))


def test_pipeline_through_torch_engine_matches_numpy(rng: np.random.Generator) -> None:
    import models

    model = models.build("SmallCNN", seed=1)
    source = open_model(model)
    options = Options()
    torch_cpu = Backend("torch-cpu", torch_backend.make_engine("cpu"))
    for tp in plan(source, options):
        ours = analyze_tensor(tp, options, backend=torch_cpu)
        ref = analyze_tensor(tp, options)
        for x, y in zip(ours, ref, strict=True):
            assert (x.name, x.status) == (y.name, y.status)
            for key, value in y.metrics.items():
                if isinstance(value, float):
                    assert x.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
                else:
                    assert x.metrics[key] == value, key


def test_auto_falls_back_to_numpy_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_backend, "cuda_available", lambda: False)
    assert resolve_backend(Device.AUTO).name == "numpy+mkl"  # the CPU backend, torch installed
    report = ws.analyze({"w": np.random.default_rng(0).standard_normal((60, 30))}, device="auto")
    assert report.analysed[0].ok


def test_cuda_without_cuda_raises_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_backend, "cuda_available", lambda: False)
    with pytest.raises(OptionError, match=r"device='cuda'.*no usable CUDA device.*device='cpu'"):
        ws.analyze({"w": np.eye(20)}, device="cuda")


def test_cuda_engine_is_used_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend CUDA is there, with the engine running on the CPU: the pipeline must route the
    # spectra through the torch engine and give the numpy numbers.
    calls: list[int] = []
    real = torch_backend.gram_spectra

    def fake_engine(device: str = "cuda") -> object:
        def engine(stack: np.ndarray, precision: Precision, what: str) -> list[np.ndarray]:
            calls.append(stack.shape[0])
            return real(stack, precision, what, device="cpu")

        return engine

    monkeypatch.setattr(torch_backend, "cuda_available", lambda: True)
    monkeypatch.setattr(torch_backend, "make_engine", fake_engine)
    assert resolve_backend(Device.CUDA).name == "torch-cuda"
    w = {"a.weight": np.random.default_rng(2).standard_normal((90, 40))}
    ours = ws.analyze(w, device="cuda")
    assert calls == [1]
    assert ours.analysed[0].metrics["alpha"] == pytest.approx(
        ws.analyze(w).analysed[0].metrics["alpha"], rel=1e-10
    )


@pytest.mark.parametrize("bad", ["gpu", "CUDA:0", 1])
def test_bad_device_raises(bad: object) -> None:
    with pytest.raises(OptionError, match=r"device=.* is not valid; choose one of 'cpu', 'cuda'"):
        Options(device=bad)  # type: ignore[arg-type]


def test_cpu_run_of_small_layers_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np, weightspectra as ws\n"
        f"w = {{'a.weight': np.random.default_rng(0).standard_normal((3000, {MKL - 1}))}}\n"
        "ws.analyze(w); ws.analyze(w, workers=2)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _spd(rng: np.random.Generator, n: int, dtype: type = np.float64) -> np.ndarray:
    x = rng.standard_normal((n + 50, n))
    return (x.T @ x).astype(dtype)


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_solver_uses_mkl_for_large_grams_and_agrees_with_lapack(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, dtype: type
) -> None:
    calls: list[int] = []
    real = torch_backend.host_eigvalsh

    def counting(gram: np.ndarray, threads: int) -> np.ndarray:
        calls.append(gram.shape[0])
        return real(gram, threads)

    monkeypatch.setattr(torch_backend, "host_eigvalsh", counting)
    small, large = _spd(rng, MKL - 1, dtype), _spd(rng, MKL, dtype)
    np.testing.assert_array_equal(cpu_solver(small), lapack_eigvalsh(small))  # same routine
    ours, ref = cpu_solver(large), lapack_eigvalsh(large)
    assert calls == [MKL]
    # two LAPACKs, one matrix: the eigenvalues agree to round-off of the largest one
    tol = 1e-12 if dtype is np.float64 else 2e-5
    assert np.abs(ours - ref).max() / ref[-1] < tol
    assert np.all(np.diff(ours) >= 0)


@needs_mkl
def test_cpu_solver_reads_only_the_lower_triangle(rng: np.random.Generator) -> None:
    gram = _spd(rng, MKL)
    junk = gram.copy()
    junk[np.triu_indices(MKL, 1)] = 1e6  # a Gram filled by syrk has only its lower triangle
    expected = lapack_eigvalsh(gram)
    np.testing.assert_allclose(cpu_solver(junk), expected, rtol=0, atol=1e-12 * expected[-1])


def test_cpu_solver_stays_on_lapack_in_a_multithreaded_worker(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weightspectra.runtime import parallel

    def refuse(gram: np.ndarray, threads: int) -> np.ndarray:
        raise AssertionError("MKL must not start OpenMP threads in a forked worker")

    monkeypatch.setattr(torch_backend, "host_eigvalsh", refuse)
    monkeypatch.setattr(parallel, "in_worker_process", lambda: True)
    monkeypatch.setattr(parallel, "blas_threads_now", lambda: 2)
    from weightspectra.backends.solvers import SolverPolicy

    monkeypatch.setattr(SolverPolicy, "_blas_threads", lambda self: 2)
    gram = _spd(rng, MKL)
    np.testing.assert_array_equal(cpu_solver(gram), lapack_eigvalsh(gram))


@needs_mkl
def test_large_layer_same_numbers_and_torch_threads_restored(rng: np.random.Generator) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    w = {"big.weight": rng.standard_t(3.0, size=(MKL + 200, MKL)).astype(np.float32)}
    before = torch.get_num_threads()
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        ours = ws.analyze(w)
    assert torch.get_num_threads() == before  # the run set 1 thread for MKL, then restored it
    assert ours.analysed[0].metrics["alpha"] is not None
    ref = ws.analyze(w, device="cpu", eig_method="svd")
    np.testing.assert_allclose(
        ours.analysed[0].evals, ref.analysed[0].evals, rtol=0, atol=1e-9 * ref.analysed[0].evals[-1]
    )
    for key in ("alpha", "D", "xmin", "log_norm", "log_spectral_norm", "alpha_weighted"):
        assert ours.analysed[0].metrics[key] == pytest.approx(
            ref.analysed[0].metrics[key], rel=1e-6
        ), key


def test_torch_engine_takes_bfloat16_host_arrays(rng: np.random.Generator) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = rng.standard_normal((1, 300, 120)).astype(np.float32)
    stored = w.astype(ml_dtypes.bfloat16)  # as the safetensors reader hands bf16 out
    ours = torch_backend.gram_spectra(stored, Precision.FLOAT64, "w", device="cpu")
    ref = numpy_spectra(stored.astype(np.float32), Precision.FLOAT64, "w")
    assert _rel(ours, ref) < 1e-12


@needs_mkl
def test_thread_workers_on_large_layers_match_serial(rng: np.random.Generator) -> None:
    model = {
        f"l{i}.weight": rng.standard_t(3.0, size=(MKL + 64 * i, MKL)).astype(np.float32)
        for i in range(2)
    }
    before = torch.get_num_threads()
    serial = ws.analyze(model)
    threaded = ws.analyze(model, workers=2, parallel="threads")
    assert torch.get_num_threads() == before
    for a, b in zip(serial.analysed, threaded.analysed, strict=True):
        # MKL on a different thread count may round differently in the last bits
        np.testing.assert_allclose(a.evals, b.evals, rtol=0, atol=1e-12 * a.evals[-1])
        assert a.metrics["num_pl_spikes"] == b.metrics["num_pl_spikes"]
        assert a.metrics["alpha"] == pytest.approx(b.metrics["alpha"], rel=1e-9)
