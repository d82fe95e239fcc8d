"""The command-line tool: output formats, files, errors as one line, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from weightspectra.cli import EXIT_OK, EXIT_USAGE, run


@pytest.fixture
def model_file(tmp_path: Path, rng: np.random.Generator) -> Path:
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        **{
            "fc1.weight": rng.standard_normal((64, 32)),
            "fc1.bias": rng.standard_normal(64),
            "fc2.weight": rng.standard_normal((10, 64)),
        },
    )
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_analyze_table(model_file: Path) -> None:
    code, out, err = cli("analyze", str(model_file))
    assert code == EXIT_OK and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["layer_id", "name", "type"]
    assert any(line.split()[1] == "fc1" for line in lines[2:4])
    assert "Model summary" in out and "alpha" in out
    assert "Not analysed by rule: 1 biases and norm scales (1-D)" in out


def test_analyze_csv_to_file(model_file: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    target = tmp_path / "out" / "details.csv"
    code, out, err = cli("analyze", str(model_file), "--format", "csv", "-o", str(target))
    assert code == EXIT_OK and out == ""
    assert "wrote 2 rows (csv)" in err
    df = pd.read_csv(target)
    assert list(df["name"]) == ["fc1", "fc2"]
    assert {"alpha", "alpha_weighted", "log_norm", "entropy", "status"} <= set(df.columns)


def test_analyze_json_and_markdown(model_file: Path) -> None:
    code, out, _ = cli("analyze", str(model_file), "-f", "json", "--all-rows")
    data = json.loads(out)
    assert code == EXIT_OK and [r["name"] for r in data["layers"]] == ["fc1", "fc1.bias", "fc2"]
    code, out, _ = cli("analyze", str(model_file), "-f", "markdown")
    assert out.count("\n| ") >= 3 and "| summary | value |" in out


def test_layers_option_and_describe(model_file: Path) -> None:
    code, out, _ = cli("analyze", str(model_file), "--layers", "fc2")
    assert code == EXIT_OK and " fc1 " not in out and " fc2 " in out
    code, out, _ = cli("describe", str(model_file))
    assert code == EXIT_OK and "Plan (" in out and "2 matrices to analyse" in out


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    code, out, err = cli("analyze", str(tmp_path / "missing.safetensors"))
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("weightspectra: error: ") and "no such file" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    code, _, err = cli("analyze", str(tmp_path / "missing.pt"), "--debug")
    assert code == EXIT_USAGE and "Traceback" in err


def test_bad_option_value(model_file: Path) -> None:
    code, _, err = cli("analyze", str(model_file), "--min-evals", "0")
    assert code == EXIT_USAGE and "min_evals must be a positive integer" in err


def test_progress_bar_on_request(model_file: Path) -> None:
    code, out, err = cli("analyze", str(model_file), "--progress")
    assert code == EXIT_OK and "3/3" in err and "3/3" not in out


def test_python_dash_m_entry_point(model_file: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "weightspectra", "analyze", str(model_file), "-f", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("layer_id,name,layer_type")
    assert (
        "--version"
        in subprocess.run(
            [sys.executable, "-m", "weightspectra", "--help"], capture_output=True, text=True
        ).stdout
    )


def test_cli_import_stays_light() -> None:
    # scipy.stats/integrate/optimize cost ~0.7 s to import; only opt-in fits (TPL) need them.
    code = (
        "import sys, weightspectra.cli\n"
        "heavy = [m for m in ('scipy.stats', 'scipy.integrate', 'scipy.optimize', 'torch',\n"
        "                     'pandas', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


_RUN_AND_LIST = """
import json, struct, sys, time
from pathlib import Path
import numpy as np
path, code = Path(sys.argv[1]), sys.argv[2]
raw = np.random.default_rng(0).standard_normal((300, 120)).astype("<f4")
if code == "BF16":
    raw = (raw.view("<u4") >> 16).astype("<u2")
header = {"fc.weight": {"dtype": code, "shape": [300, 120], "data_offsets": [0, raw.nbytes]}}
blob = json.dumps(header).encode()
path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw.tobytes())
start = time.perf_counter()
import weightspectra.cli
seconds = time.perf_counter() - start
report = __import__("weightspectra").analyze(path)
assert len(report.analysed) == 1, report.layers
heavy = ("scipy", "ml_dtypes", "torch", "pandas", "matplotlib", "threadpoolctl", "gguf", "onnx")
print(json.dumps({"seconds": seconds,
                  "loaded": sorted({m.split(".")[0] for m in sys.modules} & set(heavy))}))
"""


@pytest.mark.parametrize(("code", "expected"), [("F32", []), ("BF16", ["ml_dtypes"])])
def test_a_safetensors_run_imports_only_what_its_tensors_need(
    tmp_path: Path, code: str, expected: list[str]
) -> None:
    """A float32 checkpoint never imports ml_dtypes (0.6-1.7 s), scipy or torch; a bfloat16 one
    imports ml_dtypes, the control that the check sees imports at all. The CLI's own import,
    after numpy, is timed with a ceiling loose enough for a loaded 2-core machine (0.1-0.4 s
    measured; ml_dtypes alone used to add 0.6-1.7 s)."""
    out = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST, str(tmp_path / "m.safetensors"), code],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout)
    assert found["loaded"] == expected
    assert found["seconds"] < 1.5


@pytest.mark.parametrize("parallel", ["processes", "threads"])
def test_cli_workers_give_the_serial_numbers(tmp_path: Path, parallel: str) -> None:
    rng = np.random.default_rng(5)
    model = tmp_path / "m.npz"
    np.savez(
        model, **{f"l{i}.weight": rng.standard_t(3.0, size=(90 + 10 * i, 40)) for i in range(5)}
    )
    out, err = io.StringIO(), io.StringIO()
    args = ["analyze", str(model), "-f", "json", "--no-progress"]
    assert run([*args, "-o", str(tmp_path / "a.json")], out, err) == EXIT_OK, err.getvalue()
    assert (
        run(
            [*args, "-o", str(tmp_path / "b.json"), "--workers", "2", "--parallel", parallel],
            out,
            err,
        )
        == EXIT_OK
    ), err.getvalue()
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["options"]["parallel"] == parallel and b["options"]["workers"] == 2
    assert [r["metrics"] for r in a["layers"]] == [r["metrics"] for r in b["layers"]]


def test_every_option_has_a_flag_and_reaches_the_options() -> None:
    from dataclasses import fields

    from weightspectra.cli import _options, build_parser
    from weightspectra.options import Options

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    analyze_help = sub.choices["analyze"].format_help()  # type: ignore[attr-defined]
    for f in fields(Options):
        flag = ("--no-" if f.default is True else "--") + f.name.replace("_", "-")
        flag = "--split-qkv" if f.name == "split_fused_qkv" else flag
        assert flag in analyze_help, f"Options.{f.name} has no CLI flag {flag}"
    args = parser.parse_args(
        ["analyze", "m.safetensors", "--over-trained-alpha", "1.5", "--no-detx", "--layers",
         "dense,3", "--bootstrap-method", "tail", "--collapse-min-group", "4"]
    )  # fmt: skip
    opts = _options(args)
    assert opts == Options(
        over_trained_alpha=1.5, detx=False, layers=("dense", 3), bootstrap_method="tail",
        collapse_min_group=4,
    )  # fmt: skip
    plan = parser.parse_args(["describe", "m.safetensors", "--no-pool"])
    assert _options(plan) == Options(pool=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["describe", "m.safetensors", "--randomize"])  # computes nothing


def test_a_threshold_flag_changes_the_verdict(model_file: Path) -> None:
    code, default, _ = cli("analyze", str(model_file), "--format", "csv")
    assert code == EXIT_OK
    code, strict, _ = cli(
        "analyze", str(model_file), "--format", "csv", "--over-trained-alpha", "5.9"
    )
    assert code == EXIT_OK
    assert strict.count("over-trained") > default.count("over-trained")
