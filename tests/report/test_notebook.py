"""The example notebook runs in a Jupyter kernel (nbclient) and shows the report's summary
(verdict, correlation flow) as HTML, its plain text, and the plots."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_shows_the_summary() -> None:
    pytest.importorskip("matplotlib")
    nbformat = pytest.importorskip("nbformat", reason="pip install nbformat (dev extra)")
    nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (dev extra)")
    pytest.importorskip("ipykernel", reason="pip install ipykernel (dev extra)")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The python3 kernel runs this interpreter (jupyter_client puts sys.executable for it).
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o for o in outputs if o.output_type == "execute_result"]
    summary = next(o for o in shown if "text/html" in o.data)
    html = summary.data["text/html"]
    assert 'class="verdict ' in html and "trained" in html
    assert '<img alt="correlation flow' in html  # the correlation flow, inline
    assert summary.data["text/plain"].startswith("<weightspectra Report of ")
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.startswith("<weightspectra Report of ") and "layers have α in" in printed
    pictures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pictures) == 2  # the correlation flow and one layer's panels
