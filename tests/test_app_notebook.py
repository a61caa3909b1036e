"""Executes notebooks/04_dashboard.ipynb headless (nbclient) at its small settings."""
from pathlib import Path

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("notebook")]

NB = Path(__file__).resolve().parents[1] / "notebooks" / "04_dashboard.ipynb"


def test_dashboard_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NB.parent)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "done | t = 0.50" in out, out
