"""Relay's import graph runs one way: each module imports only from its own package or from layers below it,
counting imports made inside functions, and no modules import each other in a cycle. docs/architecture.md
draws these layers."""

from __future__ import annotations

import graphlib

from pipelines.import_graph import module_imports, relay_modules

# Bottom to top. A module may import from a lower layer, or from its own package (or, on the two floors
# that are sets of modules rather than one package, any module of its floor).
LAYERS: list[tuple[str, ...]] = [
    ("components", "components.errors", "components.atomic", "components.settings", "components.imaging"),
    ("components.spec", "components.models", "components.run_files", "components.onnx_runtime",
     "components.child_processes", "components.machine", "components.html_report", "components.class_metrics",
     "components.versioning", "components.project"),
    ("components.data",),
    ("components.validate",),
    ("components.train",),
    ("components.optimize",),
    ("components.registry",),
    ("components.deploy",),
    ("components.frameworks",),  # the backends bundle each framework's train, optimize and deploy parts
    ("components.measurement",),
    ("components.gate",),
    ("components.gitops",),
    ("components.bakeoff",),
    ("pipelines",),
]
FLOORS = (0, 1)


def _layer(module: str) -> tuple[int, str]:
    """(layer index, the unit a module belongs to: its stage package, or itself on a floor)."""
    best = None
    for index, units in enumerate(LAYERS):
        for unit in units:
            if (module == unit or module.startswith(unit + ".")) and (best is None or len(unit) > len(best[1])):
                best = (index, unit)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and to docs/architecture.md"
    return best


def test_no_import_runs_up_a_layer():
    modules = relay_modules()
    upward = []
    for name, path in sorted(modules.items()):
        level, unit = _layer(name)
        for target in sorted(module_imports(name, path, modules)):
            target_level, target_unit = _layer(target)
            same_unit = target_unit == unit or (level == target_level and level in FLOORS)
            if target_level > level or (target_level == level and not same_unit):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that run up (or across) a layer:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules():
    modules = relay_modules()
    graph = {name: module_imports(name, path, modules) for name, path in modules.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        raise AssertionError(f"an import cycle: {' -> '.join(error.args[1])}") from None


def test_the_check_sees_imports_made_inside_functions(tmp_path):
    """The rule counts a function-level import: the way the old loops hid."""
    source = tmp_path / "module.py"
    source.write_text("def late():\n    from components.frameworks import backend\n    return backend\n")
    assert module_imports("components.train.example", source, relay_modules()) == {"components.frameworks"}
