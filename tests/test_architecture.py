"""The floors of the code (docs/ARCHITECTURE.md, "Floors"), checked over the import graph.

Every import of every module, top-level or inside a function, is read with `ast`. A
package may import its own floor's package and any lower floor, never a higher one;
two packages on one floor do not import each other. The pages import only the
application layer and the core, and only the pages import Streamlit.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A package on floor i may import packages on floors <= i (its own package only, on its own floor).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("control",),          # the pure core: domain, policy, overrides, permissions, audit, users, validation ...
    ("store",),            # tables, migrations, repository functions
    ("explain",),          # models and SHAP
    ("guards",),           # guard state machines, rule pool, alerts, the worker
    ("sim",),              # the simulated promotion
    ("app",),              # the application layer: operations, read models, wiring
    ("api", "panel"),      # the bidder API and the pages
    ("bench",),            # benchmarks
    ("cli",),              # the bidlens command
)
FLOOR = {package: i for i, packages in enumerate(FLOORS) for package in packages}

# What the pages may import of ours: the application layer, the core, and explain's pure functions over
# explanations they were given (charts, reasons in words, differences, bid steps) -- never a store.
PANEL_ALLOWED = ("control", "app", "panel", "explain.analysis", "explain.bid_units", "explain.charts",
                 "explain.reasons")
# Third-party libraries that belong to some floors only (the panel benchmark drives pages with AppTest).
ONLY_IN = {"streamlit": ("panel", "bench"), "fastapi": ("api",), "uvicorn": ("api", "cli", "bench")}
# The pure core does no I/O of its own.
CORE_FORBIDDEN = ("sqlalchemy", "requests", "streamlit", "fastapi", "pandas.io")


def _modules() -> dict[str, Path]:
    out = {}
    for package in FLOOR:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported name) for every import in a module's source, relative imports resolved.

    `from a import b` gives both `a` and `a.b` (b may be a module); `import a` gives `a`, and
    `from a import *` too."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parent = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base] if base else parent)
            names = [alias.name for alias in node.names if alias.name != "*"]
            # `from app import board` imports the module app.board: the package itself is only a parent
            found.append((node.lineno, base if not names else f"{base}/"))
            found += [(node.lineno, f"{base}.{name}") for name in names]
    return found


def _package(name: str) -> str:
    return name.split(".")[0]


def _violations() -> list[str]:
    modules = _modules()
    problems = []
    for module, path in modules.items():
        own = _package(module)
        for line, imported in _imports(module, path.read_text(encoding="utf-8"), path.name == "__init__.py"):
            parent_only = imported.endswith("/")
            imported = imported.removesuffix("/")
            target = _package(imported)
            where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
            if parent_only and own == "panel" and imported == target:
                continue  # `from explain import charts`: the modules named are checked one by one
            if target in FLOOR and (imported in modules or imported == target):
                if target != own and FLOOR[target] >= FLOOR[own]:
                    problems.append(f"{where}: {own} (floor {FLOOR[own]}) may not import {target} "
                                    f"(floor {FLOOR[target]})")
                if own == "panel" and not any(imported == a or imported.startswith(a + ".")
                                              for a in PANEL_ALLOWED):
                    problems.append(f"{where}: pages go through the application layer (app)")
            for library, owners in ONLY_IN.items():
                if target == library and own not in owners:
                    problems.append(f"{where}: {library} belongs to {', '.join(owners)}")
            if own == "control" and any(imported == f or imported.startswith(f + ".") for f in CORE_FORBIDDEN):
                problems.append(f"{where}: the core does no I/O")
    return problems


def test_every_import_respects_the_floors():
    problems = _violations()
    assert not problems, "imports that break the floors:\n" + "\n".join(problems)


def test_the_checker_sees_a_violation():
    """The check is not vacuous: it reads function-level imports and names the line."""
    found = _imports("control.probe", "from control.domain import Slot\n\ndef f():\n    from store import repo\n"
                                      "    from . import audit\n")
    assert (1, "control.domain/") in found and (1, "control.domain.Slot") in found
    assert (4, "store/") in found and (4, "store.repo") in found
    assert (5, "control.audit") in found
    assert FLOOR["store"] > FLOOR["control"]


def test_the_floors_table_in_the_docs_matches():
    """docs/ARCHITECTURE.md lists the same floors, lowest first."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Floors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| floor")
            and not line.startswith("| ---")]
    listed = [tuple(p.strip(" `") for p in row.split("|")[2].split(",")) for row in rows]
    assert listed == [tuple(f"{p}/" for p in floor) for floor in FLOORS]
