"""Relay's own import graph, read from the source (imports inside functions count): what the layering test
checks, and what the step cache hashes as a step's code."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from components.settings import PROJECT_DIR

PACKAGES = ("components", "pipelines")


@lru_cache(maxsize=1)
def relay_modules(root: Path = PROJECT_DIR) -> dict[str, Path]:
    """Every module of Relay's packages, by dotted name (a package by its ``__init__``)."""
    modules = {}
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The Relay modules ``name`` imports anywhere in its file (``from pkg import module`` counts the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(path):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


@lru_cache(maxsize=None)
def _import_nodes(path: Path) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """The import statements of one file, parsed once per process (a step keys on them at every run)."""
    tree = ast.parse(path.read_text(), str(path))
    return tuple(node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


@lru_cache(maxsize=None)
def _closure(roots: tuple[str, ...], root: Path) -> tuple[Path, ...]:
    modules = relay_modules(root)
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parent = name.rpartition(".")[0]
        if parent in modules:  # importing a module runs its package's __init__ first
            todo.append(parent)
        todo.extend(module_imports(name, modules[name], modules))
    return tuple(sorted(modules[name] for name in seen))


def import_closure(roots: list[str], root: Path = PROJECT_DIR) -> list[Path]:
    """The files of ``roots`` and of every Relay module they import, directly or not, sorted."""
    return list(_closure(tuple(roots), root))
