"""The house has one way through: each layer imports only the layers below it (README, "How data flows")."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["common", "envs", "datamodules", "evaluation", "modules", "callbacks"]  # bottom to top


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every ``import x`` / ``from x import`` in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :])
        for path in sorted((ROOT / layer).glob("*.py")):
            wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in imported_packages(path) & above]
    assert not wrong, wrong


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import torch\nfrom callbacks.dyna_loop import DynaLoop\nfrom . import sibling\n")
    assert imported_packages(module) == {"torch", "callbacks"}


def test_warning_filters_live_in_train_py_only():
    """The library layers install none (importing them changes nothing); the entry point does.
    Benchmarks are entry points of their own and may silence what they measure around."""
    installs = lambda path: "filterwarnings(" in path.read_text() or "simplefilter(" in path.read_text()  # noqa: E731
    assert [str(p.relative_to(ROOT)) for layer in LAYERS for p in (ROOT / layer).glob("*.py") if installs(p)] == []
    assert installs(ROOT / "train.py")
