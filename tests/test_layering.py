"""The import direction of DESIGN.md: lower layers never import upper ones.

Every module under jaxcnn/ is parsed (nothing is imported) and each of its imports, at
module level, inside a function or for the type checker alike, is checked against
`ALLOWED`, the parts of the library each part may import. The table is the layout of
DESIGN.md as the tree has it: ops knows nothing of Flax, models know nothing of training,
training knows nothing of viz or transfer (what the engine needs for fine-tuning lives in
`jaxcnn.training.finetune`, and the model anatomy it uses in `jaxcnn.anatomy`), and viz
and transfer are peers above training. A new part of the library, or a new arrow between
parts, is a change to this table.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxcnn"
ROOT = "jaxcnn"  # `from jaxcnn import x` of a name that is not a part: the package facade

_BELOW_TRAINING = {"ops", "xla", "layers", "models", "analysis", "anatomy", "convert", "data"}

# part -> the other parts it may import. The package root (jaxcnn/__init__.py), the facade
# that re-exports the public names, may import every part; no part may import the root.
ALLOWED: dict[str, set[str]] = {
    "ops": set(),  # pure array functions
    "xla": set(),  # compiler options and the compilation cache
    "layers": {"ops"},
    "models": {"ops", "layers"},
    "analysis": {"ops", "layers", "models"},  # summary: shapes, params, MACs
    "anatomy": {"ops", "layers", "models"},  # layer paths, heads, blocks
    "convert": {"ops", "layers", "models"},  # torch state dicts, weight files
    "data": {"ops", "xla"},
    "training": set(_BELOW_TRAINING),
    "viz": {*_BELOW_TRAINING, "training"},
    "transfer": {*_BELOW_TRAINING, "training"},
    "evaluation": {*_BELOW_TRAINING, "training", "transfer"},
}

# Third-party packages a part must not import: ops has no Flax, models and below no
# optimizer or checkpointing.
FORBIDDEN_PACKAGES: dict[str, set[str]] = {
    "ops": {"flax", "optax", "orbax"},
    "layers": {"optax", "orbax"},
    "models": {"optax", "orbax"},
}

# DESIGN.md: heavy or optional imports happen inside the functions that need them, so
# `import jaxcnn` (and `import jaxcnn.training`) stays light.
HEAVY = {"tensorflow", "tensorflow_datasets", "grain", "torch", "matplotlib", "orbax", "tqdm"}


def _parts() -> set[str]:
    """The top-level parts of the library: its subpackages and modules."""
    out = set()
    for p in PACKAGE.iterdir():
        if p.is_dir() and (p / "__init__.py").exists():
            out.add(p.name)
        elif p.suffix == ".py" and p.name != "__init__.py":
            out.add(p.stem)
    return out


def _modules() -> list[tuple[str, bool, pathlib.Path]]:
    """(dotted name, is a package's __init__, file) of every module under jaxcnn/."""
    out = []
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        parts = rel.parts[:-1] if is_package else rel.parts
        out.append((".".join(parts), is_package, f))
    return out


def _part(module: str, parts: set[str]) -> str:
    """The part of the library a dotted jaxcnn module name belongs to (ROOT for the facade)."""
    names = module.split(".")
    if len(names) == 1:
        return ROOT
    return names[1] if names[1] in parts else ROOT


def _when(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """When an import runs: "module" (at import time), "function" or "type_checking" (never:
    under ``if TYPE_CHECKING:``)."""
    when = "module"
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return "type_checking"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            when = "function"
    return when


def _imports(
    module: str, is_package: bool, source: str, parts: set[str]
) -> list[tuple[int, str, str, str]]:
    """(line, imported name, statement, when it runs) of every import in `source`.

    Imports of jaxcnn are resolved to absolute dotted names (``from .. import transfer`` in
    jaxcnn/training/loop.py is "jaxcnn.transfer"); others keep their package name. "when" is
    that of `_when`: an import inside a function, or one only for the type checker, is a
    dependency all the same.
    """
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module.split(".") if is_package else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        when, text = _when(node, parents), ast.unparse(node)
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, text, when) for a in node.names)
            continue
        if node.level:
            if node.level > len(package):
                raise ValueError(f"{module}: {text} goes above the package")
            base = package[: len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for a in node.names:
            # `from jaxcnn import transfer` imports the part transfer; `from jaxcnn import
            # create_model` imports the facade.
            name = f"{target}.{a.name}" if target == ROOT and a.name in parts else target
            out.append((node.lineno, name, text, when))
    return sorted(out)


def _all_imports():
    parts = _parts()
    for module, is_package, path in _modules():
        rel = path.relative_to(PACKAGE.parent)
        for line, name, text, when in _imports(module, is_package, path.read_text(), parts):
            yield module, f"{rel}:{line}", name, text, when


def test_every_part_is_placed():
    """A new subpackage or top-level module must be given its place in the table."""
    missing = sorted(_parts() - set(ALLOWED))
    assert not missing, (
        f"jaxcnn parts {missing} are not in tests/test_layering.py's ALLOWED table: say which "
        "parts each may import (DESIGN.md's layout: lower layers never import upper ones)"
    )
    stale = sorted(set(ALLOWED) - _parts())
    assert not stale, f"ALLOWED names parts that no longer exist: {stale}"


def test_the_table_has_no_cycle():
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        if part in path:
            raise AssertionError(f"ALLOWED has a cycle: {' -> '.join((*path, part))}")
        if part not in done:
            for below in ALLOWED.get(part, ()):
                visit(below, (*path, part))
            done.add(part)

    for part in ALLOWED:
        visit(part, ())


def test_imports_go_down():
    parts = _parts()
    problems = []
    for module, where, name, text, _ in _all_imports():
        if name.split(".")[0] != ROOT:
            continue
        src, dst = _part(module, parts), _part(name, parts)
        if src == ROOT or src == dst:
            continue  # the facade re-exports everything; a part may import itself
        if dst not in ALLOWED.get(src, set()):
            allowed = ", ".join(sorted(ALLOWED.get(src, set()))) or "no other part"
            problems.append(
                f"{where}: {module} imports {name} (`{text}`), but {src} may import only {allowed}"
            )
    assert not problems, (
        "imports against the layering of DESIGN.md (lower layers never import upper ones):\n"
        + "\n".join(problems)
    )


def test_no_forbidden_packages():
    parts = _parts()
    problems = [
        f"{where}: {module} imports {name} (`{text}`); {part} must not use "
        f"{', '.join(sorted(FORBIDDEN_PACKAGES[part]))}"
        for module, where, name, text, _ in _all_imports()
        if (part := _part(module, parts)) in FORBIDDEN_PACKAGES
        and name.split(".")[0] in FORBIDDEN_PACKAGES[part]
    ]
    assert not problems, "\n".join(problems)


def test_heavy_imports_are_inside_functions():
    problems = [
        f"{where}: {module} imports {name} at module level (`{text}`); import it inside the "
        "function that needs it"
        for module, where, name, text, when in _all_imports()
        if when == "module" and name.split(".")[0] in HEAVY
    ]
    assert not problems, (
        "heavy or optional imports must stay out of import time (DESIGN.md):\n"
        + "\n".join(problems)
    )


LOOP = "jaxcnn.training.loop"


@pytest.mark.parametrize(
    ("module", "is_package", "source", "name", "when"),
    [
        (LOOP, False, "from ..transfer import x", "jaxcnn.transfer", "module"),
        (LOOP, False, "from .. import transfer", "jaxcnn.transfer", "module"),
        ("jaxcnn.training", True, "from ..transfer import x", "jaxcnn.transfer", "module"),
        ("jaxcnn.training", True, "from . import loop", "jaxcnn.training", "module"),
        (LOOP, False, "from . import finetune", "jaxcnn.training", "module"),
        (LOOP, False, "import jaxcnn.transfer.heads", "jaxcnn.transfer.heads", "module"),
        (LOOP, False, "from jaxcnn import transfer", "jaxcnn.transfer", "module"),
        (LOOP, False, "from jaxcnn import create_model", "jaxcnn", "module"),
        ("jaxcnn.ops.conv", False, "from flax import linen", "flax", "module"),
        ("jaxcnn.data.sources", False, "def f():\n    import torch", "torch", "function"),
        (LOOP, False, "def f():\n    from ..transfer import x", "jaxcnn.transfer", "function"),
    ],
)
def test_imports_are_resolved(module, is_package, source, name, when):
    """The checker itself: relative, absolute and nested imports resolve to the right part."""
    parts = _parts()
    ((_, got, _, got_when),) = _imports(module, is_package, source, parts)
    assert (got, got_when) == (name, when)


def test_parts_of_names():
    parts = _parts()
    assert _part("jaxcnn.transfer.heads", parts) == "transfer"
    assert _part("jaxcnn.training", parts) == "training"
    assert _part("jaxcnn.anatomy", parts) == "anatomy"
    assert _part("jaxcnn", parts) == ROOT


def test_type_checking_imports_count_but_never_run():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..transfer import x\n"
    found = [(n, w) for _, n, _, w in _imports(LOOP, False, source, _parts())]
    assert found == [("typing", "module"), ("jaxcnn.transfer", "type_checking")]
