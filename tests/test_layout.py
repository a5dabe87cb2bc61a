"""The house has one way through: each layer imports only the layers below it, and inside ``modules/``
each room only the rooms below it (DESIGN §7.2)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["common", "envs", "datamodules", "evaluation", "modules", "callbacks"]  # bottom to top
# inside modules/: what each room may import of modules/ (models and policies never each other)
MODULE_ROOMS = {
    "modules.blocks": set(),
    "modules.models": {"modules.blocks", "modules.models"},
    "modules.policies": {"modules.blocks", "modules.policies"},
    "modules.methods": {"modules.blocks", "modules.models", "modules.policies", "modules.methods"},
}


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every ``import x.y`` / ``from x.y import`` in ``path`` (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every ``import x`` / ``from x import`` in ``path``."""
    return {name.split(".")[0] for name in imported_modules(path)}


def room_of(name: str) -> str | None:
    """The room of ``modules/`` a dotted module name lies in (``modules.models.attention`` → ``modules.models``)."""
    return next((room for room in MODULE_ROOMS if name == room or name.startswith(room + ".")), None)


def wrong_way_imports_inside_modules(root: Path) -> list[str]:
    """Imports from one room of ``root/modules`` into a room it may not import."""
    wrong = []
    for path in sorted((root / "modules").rglob("*.py")):
        if path.name == "__init__.py" and path.parent == root / "modules":
            continue  # the package's face: it names the LightningModules the configs use
        dotted = ".".join(path.relative_to(root).with_suffix("").parts)
        room = room_of(dotted)
        if room is None:
            wrong.append(f"{path.relative_to(root)} lies in no room of modules/ ({', '.join(MODULE_ROOMS)})")
            continue
        for name in imported_modules(path):
            if name == "modules" or (name.startswith("modules.") and room_of(name) not in MODULE_ROOMS[room]):
                wrong.append(f"{path.relative_to(root)} imports {name}")
    return wrong


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for rank, layer in enumerate(LAYERS):
        above = set(LAYERS[rank + 1 :])
        for path in sorted((ROOT / layer).rglob("*.py")):
            wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in imported_packages(path) & above]
    assert not wrong, wrong


def test_inside_modules_models_and_policies_import_only_blocks_and_methods_import_both():
    assert wrong_way_imports_inside_modules(ROOT) == []


def test_the_check_sees_a_wrong_way_import_inside_modules(tmp_path):
    for room in ("blocks.py", "models/__init__.py", "policies/__init__.py", "methods/__init__.py"):
        (tmp_path / "modules" / room).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "modules" / room).write_text("")
    (tmp_path / "modules/models/net.py").write_text("from modules.blocks import mlp\n")
    (tmp_path / "modules/methods/method.py").write_text("from modules.models.net import Net\n")
    assert wrong_way_imports_inside_modules(tmp_path) == []
    planted = tmp_path / "modules/models/env.py"
    planted.write_text("from modules.policies.actor_critic import ActorCritic\n")  # a model reaching into a policy
    # a policy reaching into a method
    (tmp_path / "modules/policies/agent.py").write_text("import modules.methods.gssm_aps.aps\n")
    (tmp_path / "modules/stray.py").write_text("")
    assert wrong_way_imports_inside_modules(tmp_path) == [
        "modules/models/env.py imports modules.policies.actor_critic",
        "modules/policies/agent.py imports modules.methods.gssm_aps.aps",
        "modules/stray.py lies in no room of modules/ "
        "(modules.blocks, modules.models, modules.policies, modules.methods)",
    ]


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import torch\nfrom callbacks.dyna_loop import DynaLoop\nfrom . import sibling\n")
    assert imported_packages(module) == {"torch", "callbacks"}


def test_warning_filters_live_in_train_py_only():
    """The library layers install none (importing them changes nothing); the entry point does.
    Benchmarks are entry points of their own and may silence what they measure around."""
    installs = lambda path: "filterwarnings(" in path.read_text() or "simplefilter(" in path.read_text()  # noqa: E731
    assert [str(p.relative_to(ROOT)) for layer in LAYERS for p in (ROOT / layer).rglob("*.py") if installs(p)] == []
    assert installs(ROOT / "train.py")
