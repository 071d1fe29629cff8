"""Layering contracts: ``core`` and the SDK import no Django (import-linter, config in pyproject)."""

import ast
import pathlib
import subprocess
import sys

import dicomflow

SRC = pathlib.Path(dicomflow.__file__).parent


def test_import_linter_contracts_hold():
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=SRC.parent.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "core imports no Django KEPT" in result.stdout


def test_core_has_no_django_import_statement():
    """A second, direct check: no module below core names django at all (even lazily in a function)."""
    offenders = []
    for path in (SRC / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in {"django", "rest_framework", "celery"} for n in names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
