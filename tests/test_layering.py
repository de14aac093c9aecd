"""The package's layering: the library never imports the CLI, tests and benchmarks use public modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hwnas"


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports (``from pkg import mod`` counts ``pkg.mod``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if _is_module(f"{node.module}.{a.name}")
            )
    return out


# Front ends may use the CLI's helpers: the CLI itself and the pytest plugin
# (hwnas.testing), which resolves models and devices the way `hwnas profile` does.
FRONT_ENDS = ("commands", "cli.py", "__main__.py", "testing")
LIBRARY = [p for p in sorted(PKG.rglob("*.py")) if p.relative_to(PKG).parts[0] not in FRONT_ENDS]


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(PKG)))
def test_library_never_imports_the_cli(path):
    bad = sorted(m for m in _imports(path) if m == "hwnas.cli" or m.startswith("hwnas.commands"))
    assert not bad, f"{path.relative_to(ROOT)} imports the CLI: {bad}"


def test_tests_and_benchmarks_import_no_private_library_module():
    """A module a test or a benchmark needs is public: no leading underscore (the CLI's
    shared ``commands._*`` helpers and the zoo's ``models._registry`` aside)."""
    allowed = {"hwnas.models._registry"}
    bad = []
    for path in sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py")):
        for m in _imports(path):
            parts = m.split(".")
            private = [
                i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")
            ]
            if m.startswith("hwnas.") and private:
                module = ".".join(parts[: private[0] + 1])
                if module not in allowed and not module.startswith("hwnas.commands._"):
                    bad.append(f"{path.name}: {m}")
    assert not bad, bad
