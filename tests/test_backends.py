"""Spectrum backends: torch (run on the CPU here) equals numpy; device resolution and errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import weightspectra as ws
from weightspectra.analysis import analyze_tensor, plan
from weightspectra.backends import Backend, resolve_backend
from weightspectra.core.eigen import layer_eigenvalues, numpy_spectra
from weightspectra.errors import LayerError, OptionError
from weightspectra.options import Device, Options, Precision
from weightspectra.sources import open_model

torch = pytest.importorskip("torch")
torch_backend = pytest.importorskip("weightspectra.backends.torch_backend")


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
    assert resolve_backend(Device.AUTO).name == "numpy"
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


def test_cpu_run_never_imports_torch() -> None:
    code = (
        "import sys, numpy as np, weightspectra as ws\n"
        "w = {'a.weight': np.random.default_rng(0).standard_normal((50, 20))}\n"
        "ws.analyze(w); ws.analyze(w, workers=2)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
