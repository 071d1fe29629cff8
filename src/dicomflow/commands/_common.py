"""Shared plumbing for commands: Django set-up on demand, the JSON/exit-status contract.

Contract (see ARCHITECTURE.md): with ``--json`` a command prints exactly one JSON document on
stdout; progress and logs go to stderr; exit 0 on success, non-zero with a clear message.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

_django_ready = False


def setup_django(migrate: bool = True) -> None:
    """Configure Django once; bring the database schema up to date if it is behind."""
    global _django_ready
    if _django_ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
    import django

    # Django's start-up creates ~70k objects that live as long as the process: collecting while
    # they are made costs ~40 ms and finds nothing, so collection waits, and the survivors are then
    # moved out of the collector's sight (later full collections do not walk them again).
    collecting = gc.isenabled()
    gc.disable()
    try:
        django.setup()
    finally:
        if collecting:
            gc.freeze()
            gc.enable()
    if migrate:
        _migrate_if_behind()
    _django_ready = True


def _schema_stamp() -> tuple[Path, str]:
    """A stamp naming the database and every migration file: unchanged ⇒ the schema is current."""
    from django.apps import apps
    from django.conf import settings

    names = [settings.DATABASES["default"]["ENGINE"], str(settings.DATABASES["default"].get("NAME"))]
    for config in apps.get_app_configs():
        folder = Path(config.path) / "migrations"
        if folder.is_dir():
            names += sorted(f"{config.label}/{n}" for n in os.listdir(folder) if n.endswith(".py"))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    return Path(settings.HOME) / ".schema-stamp", digest


def _migrate_if_behind() -> None:
    """Migrate when needed; the stamp spares every later command loading the migration graph."""
    stamp, digest = _schema_stamp()
    if stamp.exists() and stamp.read_text() == digest:
        return
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
    stamp.write_text(digest)


def emit(document: Any, as_json: bool, human: str | None = None) -> None:
    """Print the result: one JSON document with --json, else a human summary."""
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
    elif human is not None:
        import typer  # loaded lazily: `dicomflow import` may run without typer (commands.early)

        typer.echo(human)
    else:
        import typer

        typer.echo(json.dumps(document, indent=2, default=str))


def report_error(message: str, as_json: bool = False) -> None:
    """The error as every command reports it: ``error: ...`` on stderr, a JSON document with --json."""
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")


def fail(message: str, as_json: bool = False, code: int = 1) -> NoReturn:
    """Stop with a clear message on stderr (and a JSON error document with --json)."""
    report_error(message, as_json)
    import typer

    raise typer.Exit(code)


def __getattr__(name: str):
    if name == "JSON_OPTION":  # built on first use, so that importing this module needs no typer
        import typer

        return typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
