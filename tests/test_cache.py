"""Resume: a content-keyed cache; an interrupted run restarted recomputes nothing already done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
import weightspectra.analysis as analysis
from weightspectra.errors import OptionError
from weightspectra.report.results import LayerResult, Status
from weightspectra.runtime.cache import ResultCache


class InterruptedRunError(Exception):
    """Raised from a progress callback to interrupt a run."""


def _model(rng: np.random.Generator, n: int = 10) -> dict[str, np.ndarray]:
    out = {f"layers.{i}.weight": rng.standard_t(3.0, size=(80 + 4 * i, 48)) for i in range(n)}
    out["layers.3.bias"] = np.zeros(80)
    return out


class Calls:
    """A list of names that worker processes can append to too (one file, appended lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clear()

    def append(self, name: str) -> None:
        with open(self.path, "a") as fh:  # O_APPEND: whole short lines, even from children
            fh.write(name + "\n")

    def items(self) -> list[str]:
        return self.path.read_text().splitlines()

    def clear(self) -> None:
        self.path.write_text("")

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items())

    def __len__(self) -> int:
        return len(self.items())

    def __eq__(self, other: object) -> bool:
        return self.items() == list(other)  # type: ignore[call-overload]


@pytest.fixture
def count_spectra(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Calls:
    """Names of the layers whose spectrum is computed (each call of layer_eigenvalues), in this
    process and in forked workers."""
    calls = Calls(tmp_path_factory.mktemp("calls") / "calls.txt")
    real = analysis.layer_eigenvalues

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(str(kwargs.get("what", "")).split()[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(analysis, "layer_eigenvalues", counting)
    return calls


def _stored_names(folder: Path) -> list[str]:
    names = []
    for path in folder.glob("[0-9a-f]*.wsc.npz"):
        with np.load(path, allow_pickle=False) as data:
            names += [r["name"] for r in json.loads(bytes(data["rows"]).decode())]
    return names


def _same(a: ws.Report, b: ws.Report) -> None:
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        np.testing.assert_equal(x.row(), y.row())  # NaN equal to NaN (rows from workers)
        if x.evals is not None:
            assert y.evals is not None
            np.testing.assert_array_equal(x.evals, y.evals)


@pytest.mark.parametrize(("workers", "parallel"), [(1, "auto"), (2, "threads"), (2, "processes")])
def test_interrupted_run_resumes_without_recomputing(
    rng: np.random.Generator,
    tmp_path: Path,
    count_spectra: Calls,
    workers: int,
    parallel: str,
) -> None:
    if parallel == "processes" and not analysis.fork_available():
        pytest.skip("worker processes need fork")
    model = _model(rng)
    reference = ws.analyze(model)
    count_spectra.clear()

    def stop_half_way(p: analysis.Progress) -> None:
        if p.done == 6:  # 5 weights and one bias done
            raise InterruptedRunError

    options = {"workers": workers, "parallel": parallel}
    with pytest.raises(InterruptedRunError):
        ws.analyze(model, cache=tmp_path, progress=stop_half_way, **options)
    first = list(count_spectra)
    assert {f"layers.{i}" for i in range(5)} <= set(first)
    stored = _stored_names(tmp_path)
    assert len(stored) == len(set(stored)) == len(ResultCache(tmp_path))
    assert {f"layers.{i}" for i in range(5)} <= set(stored) <= set(first)
    if parallel != "processes":
        # threads finish what they started; killed worker processes may not have stored it
        assert set(stored) == set(first)
    count_spectra.clear()

    resumed = ws.analyze(model, cache=tmp_path, **options)
    assert sorted(count_spectra) == sorted(
        f"layers.{i}" for i in range(10) if f"layers.{i}" not in stored
    )
    _same(reference, resumed)
    count_spectra.clear()

    again = ws.analyze(model, cache=tmp_path)
    assert count_spectra == []  # nothing recomputed
    _same(reference, again)
    assert not list(tmp_path.glob(".tmp-*"))


def test_key_depends_on_content_and_result_options(
    rng: np.random.Generator, tmp_path: Path, count_spectra: Calls
) -> None:
    model = _model(rng, 3)
    ws.analyze(model, cache=tmp_path)
    assert len(count_spectra) == 3
    count_spectra.clear()
    ws.analyze(model, cache=tmp_path, workers=2)  # workers do not change results
    assert count_spectra == []
    ws.analyze(model, cache=tmp_path, normalize=True)  # normalize does
    assert len(count_spectra) == 3
    count_spectra.clear()
    changed = dict(model)
    changed["layers.1.weight"] = model["layers.1.weight"].copy()
    changed["layers.1.weight"][0, 0] += 1e-9  # one value changed: only that layer is redone
    report = ws.analyze(changed, cache=tmp_path)
    assert count_spectra == ["layers.1"]
    _same(ws.analyze(changed), report)


def test_damaged_entry_is_recomputed(
    rng: np.random.Generator, tmp_path: Path, count_spectra: Calls
) -> None:
    model = _model(rng, 2)
    reference = ws.analyze(model, cache=tmp_path)
    entries = sorted(tmp_path.glob("*.wsc.npz"))
    assert len(entries) == 2
    entries[0].write_bytes(b"not a zip file")
    count_spectra.clear()
    _same(reference, ws.analyze(model, cache=tmp_path))
    assert len(count_spectra) == 1


def test_failed_write_leaves_no_entry(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # as if the run were killed between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        ws.analyze(_model(rng, 2), cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_round_trips_special_values(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    rows = [
        LayerResult(
            0,
            "a",
            "a.weight",
            "dense",
            Status.OK,
            shape=(4, 3),
            N=4,
            M=3,
            num_evals=3,
            metrics={
                "alpha": 0.1 + 0.2,
                "x": float("inf"),
                "y": float("nan"),
                "w": "",
                "n": None,
                "k": 7,
            },
            evals=np.array([1e-300, 0.5, 3.0]),
        ),
        LayerResult(1, "b", "b.bias", "unknown", Status.SKIPPED, reason="bias"),
    ]
    cache.put("ab" * 32, rows)
    back = cache.get("ab" * 32)
    assert back is not None
    assert back[0].metrics["alpha"] == 0.1 + 0.2
    assert back[0].metrics["x"] == float("inf") and np.isnan(back[0].metrics["y"])  # type: ignore[arg-type]
    np.testing.assert_array_equal(back[0].evals, rows[0].evals)  # type: ignore[arg-type]
    assert back[1] == rows[1] and back[1].evals is None


def test_cache_path_that_is_a_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(OptionError, match=r"cannot be used as a cache folder|is not a folder"):
        ws.analyze({"w": np.eye(20)}, cache=path)
    with pytest.raises(OptionError, match="cache must be a folder path"):
        ws.Options(cache=3)  # type: ignore[arg-type]


_CHILD = """
import sys, numpy as np, weightspectra as ws
rng = np.random.default_rng(0)
model = {f"layers.{i}.weight": rng.standard_normal((160, 120)) for i in range(24)}
def report(p):
    print(p.done, flush=True)
    if p.done == 8:
        # Hold here until killed: the parent answers nothing on stdin. EOF (the parent died)
        # ends the child instead of leaving it running.
        sys.stdin.readline()
        sys.exit(3)
ws.analyze(model, cache=sys.argv[1], progress=report)
print("finished", flush=True)
"""


def test_killed_process_leaves_only_complete_entries(tmp_path: Path, count_spectra: Calls) -> None:
    cache_dir = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cache_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        seen = []
        for line in child.stdout:
            seen.append(line.strip())
            if line.strip() == "8":  # the child now waits on stdin: nothing more is computed
                break
        assert seen[-1:] == ["8"], seen
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    cache = ResultCache(cache_dir)
    done = len(cache)
    assert 8 <= done < 24
    stored = set(_stored_names(cache_dir))
    assert {f"layers.{i}" for i in range(8)} <= stored
    for entry in cache_dir.glob("*.wsc.npz"):
        assert cache.get(entry.name.removesuffix(".wsc.npz")) is not None
    rng = np.random.default_rng(0)
    model = {f"layers.{i}.weight": rng.standard_normal((160, 120)) for i in range(24)}
    count_spectra.clear()
    resumed = ws.analyze(model, cache=cache_dir)
    # only the layers the killed run had not stored are computed again
    assert sorted(count_spectra) == sorted(
        f"layers.{i}" for i in range(24) if f"layers.{i}" not in stored
    )
    assert len(cache) == 24
    _same(ws.analyze(model), resumed)
    json.dumps(resumed.to_dict())  # a resumed report serialises like any other


def test_temporary_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    from weightspectra.runtime import cache as cache_module

    ResultCache(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    host = cache_module._HOST
    orphan = tmp_path / f".tmp-{host}-{int(dead.stdout)}-abc.wsc.npz"
    mine = tmp_path / f".tmp-{host}-{os.getpid()}-abc.wsc.npz"
    other_host = tmp_path / f".tmp-elsewhere-{int(dead.stdout)}-abc.wsc.npz"
    for path in (orphan, mine, other_host):
        path.write_bytes(b"partial")
    ResultCache(tmp_path)
    assert not orphan.exists()  # its writer is gone: swept
    assert mine.exists() and other_host.exists()  # a live writer, or another machine's
