"""The analysis on a Dask cluster: a LocalCluster of two worker processes on a generated sharded
checkpoint gives the local rows, survives a killed worker, fails a poison tensor alone, resumes
from the cache, and cancels its tasks on Ctrl-C.

Faults are injected in the workers only: a worker plugin registers, in each worker process (and
again in every process a nanny restarts), a source adapter that reads the checkpoint like the
built-in one but kills its own process when it loads a tensor named in the folder's
``FAULTS.json``. The client's own runs use the built-in adapter and never see it.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

distributed = pytest.importorskip(
    "distributed", reason="the cluster extra is not installed (pip install weightspectra[cluster])"
)
cloudpickle = pytest.importorskip("cloudpickle", reason="installed with distributed")

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

import weightspectra as ws  # noqa: E402
from weightspectra.analysis import Progress  # noqa: E402
from weightspectra.cli import run as cli_run  # noqa: E402
from weightspectra.enums import Reason, Status  # noqa: E402
from weightspectra.errors import OptionError, UnsupportedInputError  # noqa: E402
from weightspectra.runtime.cache import ResultCache  # noqa: E402
from weightspectra.runtime.cluster import (  # noqa: E402
    LOCAL_CONFIG,
    MEMORY_RESOURCE,
    analyze_on_cluster,
    shard_files,
)
from weightspectra.sources import Source  # noqa: E402

FAULTS = "FAULTS.json"
#: The memory each test worker declares (bytes): every tensor of SHAPES needs less.
WORKER_MEMORY = 1_000_000
#: Keys of the generated checkpoint, each (rows, cols), in model order; two shards.
SHAPES: dict[str, tuple[int, ...]] = {
    "model.embed_tokens.weight": (96, 24),
    "model.layers.0.self_attn.q_proj.weight": (32, 32),
    "model.layers.0.self_attn.q_proj.bias": (32,),
    "model.layers.0.mlp.up_proj.weight": (64, 32),
    "model.layers.1.self_attn.q_proj.weight": (32, 32),
    "model.layers.1.mlp.up_proj.weight": (64, 32),
    "model.layers.1.mlp.down_proj.weight": (32, 64),
    "lm_head.weight": (96, 24),
}


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, Any] = {}
    offset = 0
    for key, array in tensors.items():
        size = array.astype("<f4").nbytes
        header[key] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for array in tensors.values():
            fh.write(np.ascontiguousarray(array, dtype="<f4").tobytes())


def make_checkpoint(folder: Path, faults: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A two-shard safetensors folder with its index (and, with ``faults``, a FAULTS.json)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    keys = list(SHAPES)
    shards = {
        "model-00001-of-00002.safetensors": keys[:4],
        "model-00002-of-00002.safetensors": keys[4:],
    }
    weight_map = {}
    for name, members in shards.items():
        tensors = {k: rng.standard_t(3, size=SHAPES[k]).astype(np.float32) for k in members}
        _write_safetensors(folder / name, tensors)
        weight_map.update(dict.fromkeys(members, name))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    if faults is not None:
        (folder / FAULTS).write_text(json.dumps(faults))
    return folder


def _die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(1)  # not reached: SIGKILL cannot be caught


@dataclass(frozen=True)
class FaultyFolder:
    """A safetensors folder whose FAULTS.json names tensors that kill the loading process."""

    name: str = "test-faulty-folder"
    extra: str | None = None
    requires: str | None = None

    def can_open(self, model: object) -> bool:
        return isinstance(model, Path) and (model / FAULTS).is_file()

    def open(self, model: object) -> Source:
        from weightspectra.sources.safetensors import open_folder

        assert isinstance(model, Path)
        faults = json.loads((model / FAULTS).read_text())
        source = open_folder(model)
        entries = []
        for entry in source.entries:
            if entry.key in faults.get("poison", []):
                entry = replace(entry, load=_die)
            elif entry.key == faults.get("once", {}).get("key"):
                entry = replace(entry, load=_once(entry.load, Path(faults["once"]["marker"])))
            entries.append(entry)
        return replace(source, entries=tuple(entries))


def _once(load: Callable[[], np.ndarray], marker: Path) -> Callable[[], np.ndarray]:
    def load_or_die() -> np.ndarray:
        if not marker.exists():
            marker.touch()
            _die()
        return load()

    return load_or_die


class Faults(WorkerPlugin):
    """Registers :class:`FaultyFolder` in each worker process."""

    def setup(self, worker: Any) -> None:
        from weightspectra.sources import default_registry

        if "test-faulty-folder" not in default_registry.names():
            default_registry.register(FaultyFolder(), before="safetensors-folder")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # The test module is not importable in the workers: its plugin and adapter travel by value.
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    import dask

    # The settings of `--cluster local:N`: a death fails a task at once and the runner retries it.
    with dask.config.set(LOCAL_CONFIG):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            resources={MEMORY_RESOURCE: WORKER_MEMORY},
        )
    try:
        with distributed.Client(cluster) as c:
            c.register_plugin(Faults(), name="weightspectra-test-faults")
            yield c
    finally:
        cluster.close()
        cloudpickle.unregister_pickle_by_value(module)


def as_dicts(report: ws.Report) -> list[dict[str, Any]]:
    return [row.to_dict() for row in report.layers]


def test_shard_files_reads_the_index(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "m")
    files = shard_files(folder)
    assert files["lm_head.weight"] == "model-00002-of-00002.safetensors"
    assert set(files) == set(SHAPES)


def test_rows_identical_to_the_local_run_with_progress(client: Any, tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "m")
    local = ws.analyze(folder, min_evals=8)
    seen: list[Progress] = []
    remote = ws.analyze(folder, min_evals=8, client=client, progress=seen.append)
    assert as_dicts(remote) == as_dicts(local)
    assert [r.status for r in remote.layers].count(Status.OK) == 7
    assert remote.source == local.source and remote.summary == local.summary
    assert [p.done for p in seen] == list(range(1, len(SHAPES) + 1))
    assert {p.total for p in seen} == {len(SHAPES)}
    assert sorted(p.name for p in seen) == sorted(e.removesuffix(".weight") for e in SHAPES)


def test_workers_keep_the_opened_model_and_their_blas_budget(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_checkpoint(tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    remote = ws.analyze("m", client=client)  # relative: made absolute for the workers
    assert as_dicts(remote) == as_dicts(ws.analyze("m"))
    assert remote.source == "m"
    states = client.run(_state_of)
    assert any(str(folder) in runs for runs, _ in states.values())
    cores = len(os.sched_getaffinity(0))
    assert {threads for runs, threads in states.values() if runs} == {max(1, cores // 2)}


def _state_of(dask_worker: Any) -> tuple[str, int | None]:
    state = getattr(dask_worker, "_weightspectra_state", None)
    if state is None:
        return "", None
    return " ".join(state.runs), state.blas_threads


def test_a_tensor_larger_than_every_worker_is_a_failed_row(client: Any, tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    rng = np.random.default_rng(1)
    _write_safetensors(
        folder / "model.safetensors",
        {
            "big.weight": rng.standard_normal((512, 512)).astype(np.float32),
            "small.weight": rng.standard_normal((64, 32)).astype(np.float32),
        },
    )
    remote = ws.analyze(folder, client=client)
    big, small = remote.layers
    assert big.status is Status.FAILED and big.reason_code is Reason.TOO_LARGE
    assert "more than any worker offers (0.00 GiB)" in big.reason
    assert small.status is Status.OK


def test_one_task_per_tensor_with_shards_pinned(client: Any, tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "m")
    local = ws.analyze(folder)
    host = distributed.comm.addressing.get_address_host(
        next(iter(client.scheduler_info()["workers"]))
    )
    pinned = {"model-00002-of-00002.safetensors": [host]}
    options = ws.Options()
    remote = analyze_on_cluster(folder, client, options, shard_workers=pinned, group_flops=0)
    assert as_dicts(remote) == as_dicts(local)
    with pytest.raises(OptionError, match="not a file of"):
        analyze_on_cluster(folder, client, options, shard_workers={"model-9.safetensors": host})


def test_a_worker_killed_mid_run_and_the_rows_still_complete(client: Any, tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    key = "model.layers.1.mlp.up_proj.weight"
    folder = make_checkpoint(tmp_path / "m", {"once": {"key": key, "marker": str(marker)}})
    pids = set(client.run(os.getpid).values())
    local = ws.analyze(folder)
    # one task per tensor: the killed task itself must be run again (not split from a group)
    remote = analyze_on_cluster(folder, client, ws.Options(), group_flops=0)
    assert marker.exists(), "no worker loaded the tensor that kills its worker"
    assert as_dicts(remote) == as_dicts(local)
    client.wait_for_workers(2, timeout=30)
    assert set(client.run(os.getpid).values()) != pids  # a worker process was replaced


def test_a_poison_tensor_becomes_a_failed_row_and_the_others_stay(
    client: Any, tmp_path: Path
) -> None:
    poison = "model.layers.0.mlp.up_proj.weight"
    folder = make_checkpoint(tmp_path / "m", {"poison": [poison]})
    local = as_dicts(ws.analyze(folder))
    remote = ws.analyze(folder, client=client)
    failed = [r for r in remote.layers if r.status is Status.FAILED]
    assert [r.key for r in failed] == [poison]
    assert failed[0].reason_code is Reason.WORKER_LOST
    assert "worker died in each of its 3 tries" in failed[0].reason  # retries=2
    kept = [d for d, r in zip(as_dicts(remote), remote.layers, strict=True) if r.key != poison]
    assert kept == [d for d in local if d["key"] != poison]
    assert len(remote.layers) == len(local)


def test_the_cache_is_written_and_a_rerun_is_served_from_it(client: Any, tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "m")
    cache = tmp_path / "cache"
    first = ws.analyze(folder, client=client, cache=str(cache))
    entries = sorted(cache.glob("*.wsc.npz"))
    assert len(entries) == len(ResultCache(cache)) == 7  # every analysed tensor
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entries}
    second = ws.analyze(folder, client=client, cache=str(cache))
    assert as_dicts(second) == as_dicts(first) == as_dicts(ws.analyze(folder))
    # a recomputed tensor would have been written again (a new file renamed over the old one)
    assert {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.glob("*.wsc.npz")
    } == stamps


def test_ctrl_c_cancels_the_tasks(client: Any, tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "m")

    def interrupt(p: Progress) -> None:
        if p.name != "model.layers.0.self_attn.q_proj.bias":  # the first computed tensor
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze_on_cluster(folder, client, ws.Options(), progress=interrupt, group_flops=0)
    deadline = time.monotonic() + 20
    left: list[str] = ["?"]
    while left and time.monotonic() < deadline:
        left = client.run_on_scheduler(_our_tasks)
        time.sleep(0.1)
    assert left == []


def _our_tasks(dask_scheduler: Any) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith("weightspectra-")]


def test_an_in_memory_model_is_refused(client: Any) -> None:
    with pytest.raises(UnsupportedInputError, match=r"save it .* and pass its path"):
        ws.analyze({"fc.weight": np.eye(8)}, client=client)


def test_cli_cluster_address(
    client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_checkpoint(tmp_path / "m")
    address = client.scheduler.address
    argv = ["analyze", str(folder), "--format", "json", "--no-progress"]
    assert cli_run(argv, sys.stdout, sys.stderr) == 0
    local = json.loads(capsys.readouterr().out)
    assert cli_run([*argv, "--cluster", address], sys.stdout, sys.stderr) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == local
    assert "Dask dashboard at http" in err


def test_cli_local_n_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_checkpoint(tmp_path / "m")
    argv = ["analyze", str(folder), "--cluster", "local:0"]
    assert cli_run(argv, sys.stdout, sys.stderr) != 0
    assert "local:N needs a positive number of workers" in capsys.readouterr().err


def test_without_distributed_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from weightspectra.errors import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "distributed" else real(name, *a),
    )
    with pytest.raises(MissingDependencyError, match=r"pip install 'weightspectra\[cluster\]'"):
        ws.analyze("model.safetensors", client=object())
