"""A monitored run killed mid-training (SIGKILL while a step is being written) and restarted
from its last checkpoint records every step exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from weightspectra.training import Monitor, read_run
from weightspectra.training.run import RunWriter

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2] / "src")

#: A training loop over numpy "weights" that checkpoints every 20 steps, analyses every 10, and
#: (when told) kills itself with SIGKILL after writing the layer records of one step and half a
#: line more, before that step's commit line: the worst moment to die.
LOOP = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from weightspectra.training import Monitor
    from weightspectra.training import run as run_module

    run_dir, ckpt, first, last, kill_at = sys.argv[1], Path(sys.argv[2]), *map(int, sys.argv[3:])
    original = run_module.RunWriter._append

    def dying_append(self, name, records):
        records = list(records)
        if name == "steps.jsonl" and records and records[0]["step"] == kill_at:
            with (self.path / "layers.jsonl").open("a") as fh:
                fh.write('{"step": %d, "name": "torn' % kill_at)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, name, records)

    run_module.RunWriter._append = dying_append
    if first > 1:
        weights = dict(np.load(ckpt))
    else:
        rng = np.random.default_rng(0)
        weights = {"fc1.weight": rng.standard_normal((60, 30)),
                   "fc2.weight": rng.standard_normal((30, 20))}
    monitor = Monitor(run_dir, every=10, options=None)
    for step in range(first, last + 1):
        rng = np.random.default_rng(step)
        for w in weights.values():
            w += 0.05 * rng.standard_normal(w.shape)
        monitor.log(step, loss=1.0 / step)
        monitor.step(weights, step=step)
        if step % 20 == 0:
            np.savez(ckpt, **weights)
    monitor.close()
    """
)


def run_loop(tmp_path: Path, first: int, last: int, kill_at: int) -> int:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    args = [str(tmp_path / "run"), str(tmp_path / "ckpt.npz"), str(first), str(last), str(kill_at)]
    return subprocess.run([sys.executable, str(script), *args], env=env, timeout=120).returncode


def test_killed_and_restarted_run_has_each_step_once(tmp_path: Path) -> None:
    assert run_loop(tmp_path, 1, 60, kill_at=50) == -9  # killed while writing step 50
    layers_text = (tmp_path / "run" / "layers.jsonl").read_text()
    assert '"step": 50' in layers_text and not layers_text.endswith("\n")  # torn, uncommitted
    assert read_run(tmp_path / "run").step_numbers == (10, 20, 30, 40)
    # restart from the last checkpoint (step 40): steps 41..60 again
    assert run_loop(tmp_path, 41, 60, kill_at=-1) == 0
    run = read_run(tmp_path / "run")
    assert run.step_numbers == (10, 20, 30, 40, 50, 60)
    assert [(r["step"], r["name"]) for r in run.layers] == [
        (s, n) for s in (10, 20, 30, 40, 50, 60) for n in ("fc1", "fc2")
    ]
    # the files themselves hold no torn line and no duplicate
    lines = (tmp_path / "run" / "layers.jsonl").read_text().splitlines()
    keys = [(json.loads(x)["step"], json.loads(x)["name"]) for x in lines]
    assert len(keys) == len(set(keys)) == 12
    steps = [s["step"] for s in run.steps]
    assert steps == sorted(set(steps))
    # scalars logged twice for steps 41..49 (replayed after the restart) are kept once
    scalar_steps = [s["step"] for s in run.scalars]
    assert scalar_steps == list(range(1, 61))


def test_steps_already_recorded_are_not_recorded_again(tmp_path: Path) -> None:
    w = {"fc.weight": np.random.default_rng(0).standard_normal((40, 20))}
    with Monitor(tmp_path, every=5) as monitor:
        assert monitor.step(w, step=5) is not None
        assert monitor.step(w, step=5) is None
    with Monitor(tmp_path, every=5) as monitor:
        assert monitor.recorded_steps == (5,)
        assert monitor.step(w, step=5) is None
        assert monitor.step(w, step=10) is not None
    assert read_run(tmp_path).step_numbers == (5, 10)
    writer = RunWriter(
        tmp_path, monitor.options.to_dict(), {"every": 5, "unit": "steps", "producer": "monitor"}
    )
    with pytest.raises(Exception, match="already recorded"):
        writer.write_step(10, None, [], [], seconds=0.0)
