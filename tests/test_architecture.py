"""Layering contracts (import-linter, config in pyproject): ``core`` and the SDK import no Django,
and the product's layers import only downwards — interfaces → processing/projects/deid → export
→ intake → accounts → catalog → core, with the web and the API independent of each other."""

import ast
import pathlib
import subprocess
import sys
import tomllib

import dicomflow

SRC = pathlib.Path(dicomflow.__file__).parent
ROOT = SRC.parent.parent

LAYERS = [
    "dicomflow.cli",
    "dicomflow.api | dicomflow.web | dicomflow.commands | dicomflow.dicomweb",
    "dicomflow.quality",
    "dicomflow.processing : dicomflow.projects : dicomflow.deid",
    "dicomflow.export",
    "dicomflow.intake",
    "dicomflow.accounts",
    "dicomflow.catalog",
    "dicomflow.core",
]


def test_import_linter_contracts_hold():
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in ("core imports no Django", "sdk imports no Django", "product layers"):
        assert f"{contract} KEPT" in result.stdout


def test_layers_contract_is_the_agreed_one():
    """The contract checked above is the intended one, with no ignore list that hollows it out."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(layers) == 1
    assert layers[0]["layers"] == LAYERS
    assert not layers[0].get("ignore_imports")
    app_packages = {p.name for p in SRC.iterdir() if (p / "apps.py").exists()}
    named = {m.strip().removeprefix("dicomflow.") for layer in LAYERS for m in layer.replace(":", "|").split("|")}
    assert app_packages <= named, f"Django apps outside the layers: {sorted(app_packages - named)}"


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


def test_environment_is_read_in_settings_only():
    """Configuration comes from ``dicomflow.settings`` (parsed strictly there); no other product
    module reads ``os.environ`` / ``os.getenv`` — except these, which read no configuration."""
    allowed = {
        "settings.py",
        "celery_app.py", "wsgi.py", "commands/_common.py", "commands/early.py",  # DJANGO_SETTINGS_MODULE
        "intake/network/scp.py",  # DJANGO_SETTINGS_MODULE for the receiver run alone
        "commands/server.py",  # passes the environment on to the processes it starts
        "accounts/actors.py",  # USER: the operating-system login the CLI operator is audited as
        "processing/processors/external.py",  # the environment an external processor runs in
        "processing/processors/remote_http.py",  # the DICOMFLOW_TOKEN_* variable of an operator-registered endpoint
        "testing/pytest_home.py",  # the test session's own home
    }
    readers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                readers.add(str(path.relative_to(SRC)))
            elif isinstance(node, ast.ImportFrom) and node.module == "os" and {"environ", "getenv"} & {
                    a.name for a in node.names}:
                readers.add(str(path.relative_to(SRC)))
    assert readers <= allowed, sorted(readers - allowed)
    assert not [r for r in readers if r.startswith("core/")], "core is handed its configuration"
