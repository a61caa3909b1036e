"""Executes notebooks/03_sampling.ipynb headless (nbclient) at its small settings."""
from pathlib import Path

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("notebook")]

NB = Path(__file__).resolve().parents[1] / "notebooks" / "03_sampling.ipynb"


def test_sampling_notebook_executes():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NB.parent)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "log_z_exact" in out and "conditional mode masses" in out, out
