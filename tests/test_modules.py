"""Every module of the package stands on its own, and every one is named by a test.

- Each module under ``proxy/`` imports in a fresh interpreter state: one subprocess imports them one at
  a time, forgetting every ``proxy`` module before the next, so an import cycle (or an import that only
  works when something else was imported first) fails here, naming the module.
- Each module under ``proxy/`` (except ``__init__``, ``__main__`` and the emulator's, which has its own
  tests) is imported by name by at least one test file: a module nobody tests by name shows up here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxy"
TESTS = ROOT / "tests"
HERE = Path(__file__).resolve()

IMPORT_EACH = r"""
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "proxy" or m.startswith("proxy.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[str]:
    """Every module and package (``__main__`` runs the command line: it is not imported)."""
    return sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def _tested_modules() -> list[str]:
    """The modules a test must name: not packages, not ``__main__``, not the emulator's."""
    return sorted(
        _module_name(p)
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "emulator" not in p.relative_to(PACKAGE).parts
    )


def _named_in(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from proxy.x import y
    return names


def test_every_module_imports_on_its_own():
    modules = _modules()
    assert len(modules) > 50 and "proxy.pipeline" in modules and "proxy.filters.forward" in modules
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, json.dumps(modules)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "modules that do not import on their own:\n" + "\n".join(
        f"{name}:\n{trace}" for name, trace in failed.items()
    )


def test_every_module_is_imported_by_name_by_a_test():
    named: set[str] = set()
    for path in TESTS.rglob("*.py"):
        if path.resolve() != HERE and "support" not in path.relative_to(TESTS).parts:
            named |= _named_in(path)
    untested = [m for m in _tested_modules() if m not in named]
    assert not untested, (
        "modules no test file imports by name (add a test of the module's contract):\n  "
        + "\n  ".join(untested)
    )


def test_the_check_reads_every_form_of_import(tmp_path):
    tested = _tested_modules()
    assert "proxy.filters.forward" in tested and "proxy.filters" not in tested
    assert not [m for m in tested if m.startswith("proxy.emulator")]
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import proxy.a.b\nfrom proxy.c import d, e\nfrom .x import y\n\n"
        "def f():\n    from proxy.g.h import K\n"
    )
    assert _named_in(sample) == {"proxy.a.b", "proxy.c", "proxy.c.d", "proxy.c.e", "proxy.g.h", "proxy.g.h.K"}
