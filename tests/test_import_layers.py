"""The package's layers: no module imports from a layer above its own (issue 15), checked by parsing every import.

Layers, lowest first (a module may import its own layer and the layers below it):

1. ``infrastructure``: errors, units, parallel (MPI), device (CPU/GPU choice), schema (declaring and reading
   inputs), timing, decomposition (the grid layout), io (files), and the package root (its version). No physics: they move arrays and files, whatever they mean.
2. ``physics``: structure, descriptors, model, ldos, energy, datagen (MD and QE inputs): plain functions on
   arrays that compute things, called with a communicator and a layout but knowing nothing of input files.
3. ``application``: config (the input schema), tasks (one function of (config, comm) each) and interfaces (the
   ASE calculator): they put physics and I/O together for a user.
4. ``entry``: cli and commands, the command line.

Besides, a task module is imported only by other task modules and the command line: interfaces and config use
the physics directly, never a task.
"""

import ast

from conftest import REPO

PACKAGE = REPO / "mldft_app"

LAYERS = (
    ("infrastructure", ("mldft_app", "errors", "units", "parallel", "device", "schema", "timing", "decomposition", "io")),
    ("physics", ("structure", "descriptors", "model", "ldos", "energy", "datagen")),
    ("application", ("config", "tasks", "interfaces")),
    ("entry", ("cli", "commands")),
)
TASK_IMPORTERS = ("tasks", "cli", "commands")


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """Every mldft_app module ``path`` imports (absolute names; ``from . import x`` gives package.x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mldft_app")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "mldft_app":
                continue
            if node.module is None:  # from . import x: x is a module of that package (or a name of its __init__)
                found.update(f"{module}.{a.name}" for a in node.names)
            else:
                found.add(module)
    return found


def top(module):
    """The top-level part of an mldft_app module name: "tasks" for mldft_app.tasks.predict, "mldft_app" for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mldft_app"


def layer(module):
    part = top(module)
    if not (PACKAGE / part).is_dir() and not (PACKAGE / f"{part}.py").exists():
        part = "mldft_app"  # a name of the package root (from . import __version__)
    for index, (_, members) in enumerate(LAYERS):
        if part in members:
            return index
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer(module_name(path))


def test_no_import_from_a_higher_layer():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for imported in sorted(imported_modules(path)):
            if layer(imported) > layer(name):
                violations.append(f"{name} ({LAYERS[layer(name)][0]}) imports {imported} ({LAYERS[layer(imported)][0]})")
    assert not violations, "\n".join(violations)


def test_only_tasks_and_the_command_line_import_tasks():
    violations = [f"{module_name(path)} imports {imported}"
                  for path in sorted(PACKAGE.rglob("*.py")) if top(module_name(path)) not in TASK_IMPORTERS
                  for imported in sorted(imported_modules(path)) if top(imported) == "tasks"]
    assert not violations, "\n".join(violations)


def test_the_checker_sees_relative_imports(tmp_path):
    """The parser resolves relative imports (a violation written as ``from ..tasks import x`` is found)."""
    assert "mldft_app.tasks.checks" in imported_modules(PACKAGE / "tasks" / "predict.py")
    assert "mldft_app.energy.total" in imported_modules(PACKAGE / "ldos" / "analysis.py")
    assert layer("mldft_app.tasks.predict") > layer("mldft_app.ldos.analysis") > layer("mldft_app.io.output")
