"""The local quickstart notebook runs top to bottom (tiny model, small slice)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_local_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFPIPELINE_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("TFPIPELINE_NOTEBOOK_DIR", str(tmp_path))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "quickstart_local.ipynb"), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "test accuracy:" in outputs
    assert os.path.isfile(os.path.join(tmp_path, "rt", "eval_report.json"))
    assert os.path.isfile(os.path.join(tmp_path, "tuning", "search", "best_config.yaml"))


def test_colab_notebook_only_calls_the_library():
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "colab_tpu.ipynb"), as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "get_strategy('tpu')" in source and "static_shapes=True" in source
    assert "class " not in source and "def " not in source, "notebooks must call the library, not copy it"
