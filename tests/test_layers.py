"""The package's layers: no module imports from a layer above its own, and no import cycle among its modules.

Every `import` / `from ... import` statement of every module under `rasft_trl/` counts, at module level or inside a
function (a lazy import is still a dependency), `if TYPE_CHECKING:` blocks included. `from package import name`
depends on the submodule `package.name` when there is one, else on `package`. Imports spelled as strings
(`importlib.import_module` in the packages' lazy `__getattr__`) are not seen. The same order, with what each layer
holds, is in docs/architecture.md ("Layers").
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rasft_trl"

#: Lowest first; a module may import from its own layer and the layers below. Each module matches exactly one layer
#: (a new module must be placed here).
LAYERS: list[tuple[str, list[str]]] = [
    ("base utilities", ["rasft_trl.cache", "rasft_trl.notices", "rasft_trl.prompts", "rasft_trl.distributed",
                        "rasft_trl.shipped", "rasft_trl.model_card", "rasft_trl.host_memory"]),
    ("verifiers", ["rasft_trl.verifiers", "rasft_trl.verifiers.*"]),
    ("training parts", ["rasft_trl.data", "rasft_trl.losses", "rasft_trl.srft_losses", "rasft_trl.curriculum",
                        "rasft_trl.filters", "rasft_trl.rewards", "rasft_trl.rasft_config", "rasft_trl.srft_config",
                        "rasft_trl.generation", "rasft_trl.generation.*"]),
    ("trainers", ["rasft_trl.rasft_trainer", "rasft_trl.srft_trainer", "rasft_trl.baselines", "rasft_trl.baselines.*",
                  "rasft_trl.trainer_metrics", "rasft_trl.checkpoints",
                  "rasft_trl.async_rollouts", "rasft_trl.scoring", "rasft_trl.trainer_utils",
                  "rasft_trl"]),
    ("evaluation", ["rasft_trl.evaluation", "rasft_trl.evaluation.*", "rasft_trl.prepare_data", "rasft_trl.study",
                    "rasft_trl.study.*"]),
    ("scripts and demo", ["rasft_trl.scripts", "rasft_trl.scripts.*", "rasft_trl.demo", "rasft_trl.demo.*"]),
    ("cli", ["rasft_trl.cli"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in path.parts}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` (file `path`) imports, anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only `a.b` is ours, or outside names
                target = target.rpartition(".")[0]
            if target.split(".")[0] == "rasft_trl" and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    matches = [i for i, (_, patterns) in enumerate(LAYERS) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    assert len(matches) == 1, f"{name} matches layers {[LAYERS[i][0] for i in matches]}: place it in exactly one"
    return matches[0]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_import_parser_sees_module_level_function_level_and_relative_imports(graph):
    assert "rasft_trl.losses" in graph["rasft_trl.rasft_trainer"]  # `from . import curriculum, losses`
    assert "rasft_trl.verifiers.sandbox" in graph["rasft_trl.verifiers.code"]  # `from .sandbox import Sandbox`
    assert "rasft_trl.cache" in graph["rasft_trl.model_card"]  # inside a function
    assert "rasft_trl.demo.model" in graph["rasft_trl.scripts.rasft"]  # `from ..demo.model import ...`, in a function
    assert "rasft_trl" in graph["rasft_trl.demo.run"]  # `from rasft_trl import RASFTConfig`: the package itself
    assert len(graph) > 60


def test_every_module_has_one_layer(graph):
    for name in graph:
        layer_of(name)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: each component of more than one module is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so that a deep chain cannot hit the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_module_imports_from_a_layer_above_its_own(graph):
    assert upward_imports(graph) == []


def test_no_import_cycle(graph):
    assert import_cycles(graph) == []


def test_the_checks_are_not_vacuous(graph):
    """The arrows issue 28 removed are found again once put back: the evaluation reaching up into the demo, and the
    circle between the verifier interface and the verifiers."""
    broken = {name: set(targets) for name, targets in graph.items()}
    broken["rasft_trl.evaluation.benchmarks"].add("rasft_trl.demo.model")
    broken["rasft_trl.verifiers.base"].add("rasft_trl.verifiers.math")
    assert upward_imports(broken) == [
        "rasft_trl.evaluation.benchmarks (evaluation) imports rasft_trl.demo.model (scripts and demo)"
    ]
    assert ["rasft_trl.verifiers.base", "rasft_trl.verifiers.math"] in import_cycles(broken)
