"""The declared schema: every consumer derives its columns from it, rows serialise in one place,
a registered metric reaches every output, and the cache never serves an older schema."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import weightspectra as ws
from weightspectra import schema
from weightspectra.enums import Reason, Status
from weightspectra.errors import OptionError
from weightspectra.report.render import render
from weightspectra.report.results import LayerResult, Report
from weightspectra.runtime.cache import ResultCache

PACKAGE = Path(ws.__file__).parent


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "a.weight": rng.standard_t(3.0, (120, 60)),
        "a.bias": rng.standard_normal(120),
        "b.weight": rng.standard_normal((90, 40)),
    }


@pytest.fixture
def extra_metric() -> Iterator[schema.Column]:
    """A throwaway metric: the log10 of the mean eigenvalue, shown in the table."""
    col = schema.Column(
        "log_mean_eval", "log10 of the mean eigenvalue", schema.Group.EXTRA, float, table=99
    )
    schema.register_column(col, lambda s: float(np.log10(np.mean(s.evals))))
    try:
        yield col
    finally:
        schema.unregister_column(col.name)


def test_a_registered_metric_reaches_every_output(
    extra_metric: schema.Column, tmp_path: Path
) -> None:
    model = _model()
    report = ws.analyze(model, cache=str(tmp_path / "cache"))
    # expected from the eigenvalues computed here, independently: singular values of b
    s = np.linalg.svd(model["b.weight"], compute_uv=False)
    expected = math.log10(float(np.mean(s**2)))
    assert report["b"].metrics["log_mean_eval"] == pytest.approx(expected, rel=1e-10)

    table = render(report, "table")
    assert "log_mean_eval" in table.splitlines()[0]
    rows = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert float(rows[1]["log_mean_eval"]) == pytest.approx(expected, rel=1e-12)
    again = Report.from_json(report.to_json())
    assert again["b"].metrics["log_mean_eval"] == report["b"].metrics["log_mean_eval"]

    pytest.importorskip("pandas")
    from weightspectra.compat import WeightWatcher

    details = WeightWatcher(model=model).analyze()
    assert details.loc[details["longname"] == "b", "log_mean_eval"].item() == pytest.approx(
        expected, rel=1e-10
    )

    # the cache written with the column serves it back (same schema) ...
    cached = ws.analyze(model, cache=str(tmp_path / "cache"))
    assert cached["b"].metrics["log_mean_eval"] == report["b"].metrics["log_mean_eval"]


def test_a_cache_written_before_a_column_existed_is_not_reused(tmp_path: Path) -> None:
    model = _model()
    folder = tmp_path / "cache"
    ws.analyze(model, cache=str(folder))
    before = len(ResultCache(folder))
    col = schema.Column("always_one", "a constant", schema.Group.EXTRA, int)
    schema.register_column(col, lambda s: 1)
    try:
        report = ws.analyze(model, cache=str(folder))
    finally:
        schema.unregister_column("always_one")
    # recomputed (new entries under a new key), and the new column is there
    assert len(ResultCache(folder)) == before + 2
    assert all(r.metrics["always_one"] == 1 for r in report.analysed)


def test_fingerprint_changes_with_the_columns() -> None:
    base = schema.fingerprint()
    schema.register_column(schema.Column("tmp_col", "x", schema.Group.EXTRA), lambda s: 0.0)
    try:
        assert schema.fingerprint() != base
    finally:
        schema.unregister_column("tmp_col")
    assert schema.fingerprint() == base


def test_register_refuses_a_taken_name() -> None:
    with pytest.raises(OptionError, match="exists already"):
        schema.register_column(schema.Column("alpha", "dup", schema.Group.EXTRA), lambda s: 0.0)


def test_every_metric_of_an_analysis_is_a_declared_column() -> None:
    report = ws.analyze(_model(), randomize=True, bootstrap=10, compare_fits=True, fingers=True)
    declared = set(schema.names())
    for row in report.layers:
        assert set(row.row()) <= declared, set(row.row()) - declared


def test_rows_round_trip_through_their_one_serialised_form() -> None:
    report = ws.analyze(_model(), randomize=True)
    for row in report.layers:
        data = json.loads(json.dumps(row.to_dict()))
        back = LayerResult.from_dict(data)
        assert back == row
        assert back.reason_code is row.reason_code
        for name in ("evals", "rand_evals"):
            a, b = getattr(row, name), getattr(back, name)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
        pickled = pickle.loads(pickle.dumps(row))
        assert pickled == row


def test_non_finite_values_survive_json() -> None:
    row = LayerResult(
        0, "x", "x.weight", "dense", Status.OK, metrics={"log_alpha_norm": math.inf, "D": math.nan}
    )
    back = LayerResult.from_dict(json.loads(json.dumps(row.to_dict())))
    assert back.metrics["log_alpha_norm"] == math.inf
    assert math.isnan(float(back.metrics["D"]))  # type: ignore[arg-type]


def test_reason_codes_not_prose_decide_the_routine_summary() -> None:
    report = ws.analyze(_model(), exclude=["^b$"])
    codes = {r.name: r.reason_code for r in report.layers}
    assert codes["a.bias"] is Reason.NOT_MATRIX
    assert codes["b"] is Reason.EXCLUDED
    text = render(report, "table")
    assert "1 biases and norm scales (1-D)" in text
    assert "1 excluded by --exclude" in text


def test_peer_facade_columns_come_from_the_schema() -> None:
    from weightspectra.compat import DETAILS_COLUMNS

    ours = [c for c in DETAILS_COLUMNS if c not in ("longname", "has_esd", "status")]
    assert ours == list(schema.peer_columns())
    # the peer's own order, written out here from its documentation (peer.md)
    assert DETAILS_COLUMNS[:10] == (
        "layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals", "has_esd"
    )  # fmt: skip


def test_metrics_doc_lists_every_column() -> None:
    doc = (PACKAGE.parents[1] / "docs" / "metrics.md").read_text()
    assert schema.markdown_table() in doc, (
        "docs/metrics.md's column table is out of date: regenerate it with "
        "`python -m weightspectra.schema`"
    )


def test_thresholds_reach_the_html_colours() -> None:
    rng = np.random.default_rng(3)
    model = {"w.weight": rng.standard_normal((400, 200))}
    default = ws.analyze(model)
    alpha = default["w"].metrics["alpha"]
    assert isinstance(alpha, float) and 2.0 < alpha < 6.0
    assert '<tr class="good">' in default.to_html(plots=False)
    # the user's threshold, just above this layer's α, makes it over-trained everywhere
    mine = ws.analyze(model, over_trained_alpha=alpha + 0.1)
    assert "over-trained" in str(mine["w"].metrics["warning"])
    html = mine.to_html(plots=False)
    assert '<tr class="heavy">' in html and '<tr class="good">' not in html
    assert f"orange below {alpha + 0.1:g}" in html


def test_randomised_esd_is_kept_and_served() -> None:
    rng = np.random.default_rng(11)
    w = rng.standard_normal((200, 100))
    report = ws.analyze({"w": w}, randomize=True, seed=5)
    row = report["w"]
    assert row.rand_evals is not None and row.rand_evals.size == 100
    # independently: the same seeded shuffle, eigenvalues by SVD
    shuffled = np.random.default_rng(5).permutation(w.ravel()).reshape(w.shape)
    expected = np.sort(np.linalg.svd(shuffled, compute_uv=False) ** 2)
    np.testing.assert_allclose(row.rand_evals, expected, rtol=1e-9)
    assert row.metrics["max_rand_eval"] == pytest.approx(expected[-1], rel=1e-9)
    pytest.importorskip("pandas")
    from weightspectra.compat import WeightWatcher

    watcher = WeightWatcher(model={"w": w})
    watcher.analyze()
    esd = watcher.get_ESD(layer="w", random=True)
    assert esd.size == 100 and not np.array_equal(esd, row.evals)


def test_core_imports_nothing_downstream() -> None:
    code = (
        "import weightspectra.core.eigen, sys; "
        "print(sorted(m for m in sys.modules if m.startswith('weightspectra')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for part in ("metrics", "report", "sources", "analysis", "options"):
        assert f"weightspectra.{part}" not in out, out


def _top_level_imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` imported at module level by ``path`` (not under TYPE_CHECKING,
    not inside functions)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if not isinstance(node, ast.If | ast.Try) else ast.walk(node):
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                if sub.module.startswith(package):
                    out.add(sub.module)
                    out.update(
                        f"{sub.module}.{a.name}"
                        for a in sub.names
                        if (PACKAGE.parent / f"{sub.module}.{a.name}".replace(".", "/")).exists()
                        or (
                            PACKAGE.parent / (f"{sub.module}.{a.name}".replace(".", "/") + ".py")
                        ).exists()
                    )
            elif isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names if a.name.startswith(package))
    return out


def test_no_import_cycle_in_the_package() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        graph[".".join(parts)] = _top_level_imports(path, "weightspectra")
    # a module imports its parent packages' __init__ too; those edges are implicit, left out
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "weightspectra" or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def _all_imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in ``path`` (functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("report", ("weightspectra.metrics", "weightspectra.analysis")),
        ("core", ("weightspectra.metrics", "weightspectra.report", "weightspectra.sources",
                  "weightspectra.options")),
        ("sources", ("weightspectra.metrics", "weightspectra.report", "weightspectra.analysis")),
    ],
)  # fmt: skip
def test_layers_import_only_downstream_of_the_pipeline(
    package: str, forbidden: tuple[str, ...]
) -> None:
    for path in (PACKAGE / package).rglob("*.py"):
        bad = sorted(m for m in _all_imports(path) if m.startswith(forbidden))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"


def test_quantization_of_the_source_reaches_the_rows() -> None:
    from weightspectra.enums import LayerType
    from weightspectra.sources import Source, TensorEntry

    w = np.random.default_rng(2).standard_normal((48, 24))
    entry = TensorEntry(
        key="q.weight", shape=w.shape, dtype="float64", load=lambda: w,
        layer_type=LayerType.DENSE, quantization="Q8_0",
    )  # fmt: skip
    plain = TensorEntry(
        key="p.weight", shape=w.shape, dtype="float64", load=lambda: w,
        layer_type=LayerType.DENSE,
    )  # fmt: skip
    report = ws.analyze(Source("hand-built", (entry, plain)))
    assert report["q"].quantization == "Q8_0" and report["q"].row()["quantization"] == "Q8_0"
    assert "quantization" not in report["p"].row()  # only rows of quantised tensors carry it
    assert LayerResult.from_dict(report["q"].to_dict()).quantization == "Q8_0"
    header = render(report, "csv").splitlines()[0].split(",")
    assert "quantization" in header


def test_public_compare_is_the_function_whatever_was_imported_first() -> None:
    # The function shares its name with its subpackage; importing the subpackage first (as the
    # CLI does) must not turn ``weightspectra.compare`` into the module.
    code = (
        "import weightspectra.compare\n"
        "import weightspectra as ws\n"
        "from weightspectra.compare import compare\n"
        "assert ws.compare is compare and callable(ws.compare), ws.compare\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
