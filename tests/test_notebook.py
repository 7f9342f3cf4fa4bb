"""The walkthrough notebook runs top to bottom, headless, with small epoch counts (slow: trains real weights)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.conftest import HYMENOPTERA, ROOT, requires_hymenoptera

NOTEBOOK = ROOT / "notebooks" / "transfer_learning_walkthrough.ipynb"
# Small enough for CI on 2 CPU cores (measured ~4 min), still a real run of every cell.
FAST = {
    "TRANSFERLAB_NB_FINETUNE_EPOCHS": "1",
    "TRANSFERLAB_NB_LIMIT_TRAIN_BATCHES": "0.25",
    "TRANSFERLAB_NB_IMAGE_SIZE": "160",
}


def test_notebook_is_committed_with_its_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "commit the notebook executed"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.slow
@requires_hymenoptera
def test_notebook_runs_headless_without_errors(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel must be this interpreter (this virtualenv), whatever kernels the machine has registered.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "transferlab test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for key, value in {**FAST, "TRANSFERLAB_NB_OUTPUT": str(tmp_path / "out"),
                       "TRANSFERLAB_NB_DATA": str(HYMENOPTERA)}.items():
        monkeypatch.setenv(key, value)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    # Raises CellExecutionError naming the failing cell and its traceback if any cell errors.
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
                   ).execute()
    elapsed = time.perf_counter() - start
    print(f"notebook executed in {elapsed:.0f}s")

    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Best val acc" in outputs and "| macro avg |" in outputs
    for name in ("frozen", "finetune"):
        summary = json.loads((tmp_path / "out" / name / "summary.json").read_text())
        assert summary["classes"] == ["ants", "bees"]
    assert (tmp_path / "out" / "eval" / "confusion_matrix.png").is_file()
    assert json.loads((tmp_path / "out" / "eval" / "metrics.json").read_text())["metrics"]["num_images"] == 153
