"""The layers of docs/architecture.md hold: imports point down, never up, and no module imports itself back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SRC = ROOT / "src"

# Lower number = lower layer. A module may import its own layer or any lower one.
LAYERS = {
    "transferlab.config": 0, "transferlab.files": 0, "transferlab.provenance": 0, "transferlab.errors": 0,
    "transferlab.record": 0,
    "transferlab.data": 1,
    "transferlab.models": 2, "transferlab.evaluation": 2,
    "transferlab.callbacks": 3, "transferlab.inference": 3, "transferlab.sweep_report": 3,
    "transferlab.jobs.repetitions": 3,  # the repetitions' directory names, which the sweep report reads
    "transferlab.training": 4, "transferlab.advise": 4,  # the phases a task runs; the advisor a task asks
    "transferlab.quality": 4,  # the deep quality check: features (training), head fit (models), cleanlab
    "transferlab.tasks": 5, "transferlab.jobs": 5,
    "transferlab.data.doctor.__main__": 5,  # a command (`python -m`): its --deep runs the quality check
    "transferlab": 6,  # the package's lazy `load_classifier`
}
NEVER = {("transferlab.data", "transferlab.models"), ("transferlab.models", "hydra")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Every module's imports of anything (top-level or inside functions), absolute names."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = found
    return graph


def _layer(module: str) -> tuple[str, int] | None:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    return None


def test_imports_point_down_the_layers():
    graph = _imports()
    upward = []
    for module, imported in graph.items():
        here = _layer(module)
        assert here is not None, f"{module} belongs to no layer of docs/architecture.md"
        for target in imported:
            there = _layer(target)
            if there is not None and there[1] > here[1]:
                upward.append(f"{module} -> {target}")
            for low, high in NEVER:
                if module.startswith(low) and (target == high or target.startswith(high + ".")):
                    upward.append(f"{module} -> {target} (never)")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycles_between_modules():
    graph = _imports()
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}
    # A package's __init__ re-exporting its own submodules is not a cycle of concepts; skip package -> child.
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_sweep_report_and_the_job_runner_import_no_torch_lightning_or_matplotlib():
    """`python -m transferlab.sweep_report` and the multirun's Hydra callback start without the heavy libraries
    (matplotlib loads when the plot is drawn, torch and Lightning when a job trains)."""
    heavy = ("torch", "lightning", "matplotlib", "torchmetrics", "torchvision", "timm")
    code = ("import sys, transferlab.sweep_report, transferlab.jobs; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_command_line_composes_and_checks_a_config_without_the_heavy_libraries():
    """train.py's own imports, composing conf/train.yaml and checking it (the typed settings, a config mistake
    refused) load neither Lightning, timm, torchvision nor scikit-learn: `--help`, `--cfg job` and a typo answer
    before they would (bench/startup.py times it)."""
    heavy = ("lightning", "timm", "torchvision", "sklearn", "torchmetrics")
    code = f"""
import sys, runpy
sys.argv = ["train.py"]
module = runpy.run_path({str(ROOT / "train.py")!r}, run_name="not_main")  # train.py's imports, not its main
from hydra import compose, initialize_config_dir
from transferlab.config.settings import RunSettings
from transferlab.errors import ConfigValueError
with initialize_config_dir({str(ROOT / "conf")!r}, version_base="1.3"):
    cfg = compose("train", overrides=["paths.root_dir=/tmp/x", "paths.output_dir=/tmp/x/run"])
    bad = compose("train", overrides=["paths.root_dir=/tmp/x", "paths.output_dir=/tmp/x/run", "optimizer.lr=0"])
settings = RunSettings.from_config(cfg)
try:
    RunSettings.from_config(bad)
except ConfigValueError as e:
    print("refused:", e)
print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    refused, loaded = proc.stdout.strip().splitlines()[-2:]
    assert refused.startswith("refused: optimizer.lr=0")
    assert loaded == "[]"
