"""The ``dicomflow`` command: every user job as a command, ``--json`` for machines.

Start-up is kept light: heavy modules (Django, pydicom, numpy) are imported inside commands, and
typer itself only once an import has had the chance to start its workers (``commands.early``).
Each command group lives in ``dicomflow.commands.<area>`` and registers itself on ``app``.
"""

from __future__ import annotations

import gc
import importlib
import sys

# One module per product area; each has ``register(app)``.
COMMAND_MODULES = [
    "dicomflow.commands.intake",
    "dicomflow.commands.server",
    "dicomflow.commands.deid",
    "dicomflow.commands.rules",
    "dicomflow.commands.rt",
    "dicomflow.commands.check",
    "dicomflow.commands.catalog",
    "dicomflow.commands.network",
    "dicomflow.commands.export",
    "dicomflow.commands.qr",
    "dicomflow.commands.process",
    "dicomflow.commands.projects",
    "dicomflow.commands.accounts",
    "dicomflow.commands.retention",
]

_app = None


def build_app():
    """The typer application with every command group registered (built once)."""
    global _app
    if _app is None:
        import typer

        _app = typer.Typer(
            name="dicomflow",
            help="Move clinical DICOM into research and automatic processing, safely.",
            no_args_is_help=True,
            add_completion=False,
            pretty_exceptions_enable=False,
        )
        for name in COMMAND_MODULES:
            importlib.import_module(name).register(_app)
    return _app


def __getattr__(name: str):
    if name == "app":  # ``dicomflow.cli.app``, e.g. for typer's test runner
        return build_app()
    raise AttributeError(name)


def main() -> None:
    import os

    os.umask(0o077)  # what the product writes is private to its account (settings sets it too)
    from dicomflow.commands import early

    plain = early.start_from_argv(sys.argv[1:])  # `dicomflow import ...`: workers run from here on
    try:
        if plain is not None:
            early.run_import(plain)  # a plain command line: the values typer would parse
        else:
            build_app()()
    except Exception as exc:
        _database_unusable(exc)
        _stopped_by_our_error(exc)
        raise
    finally:
        # Skip the interpreter's last full collection: with Django, Celery and pydicom loaded it
        # takes ~0.2 s on a 2-core VM, after the work is done. Objects are not leaked by this
        # (the process ends); only finalizers of cyclic garbage are skipped, and files, logs and
        # database connections are closed by their owners (atexit, context managers) before.
        gc.freeze()


def _database_unusable(exc: Exception) -> None:
    """A database that cannot be reached or opened: one clear line (and JSON), not a traceback."""
    db = sys.modules.get("django.db.utils")
    if db is None or not isinstance(exc, db.OperationalError):
        return
    reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    from dicomflow.commands._common import report_error

    message = f"the database cannot be used: {reason} (check DATABASE_URL / DICOMFLOW_HOME)"
    report_error(message, as_json="--json" in sys.argv[1:])
    raise SystemExit(1) from None


def _stopped_by_our_error(exc: Exception) -> None:
    """A dicomflow error no command caught — above all a bad setting (``ConfigurationError`` from
    ``dicomflow.settings``, raised before any command runs): one ``error: ...`` line, exit 1."""
    from dicomflow.errors import DicomflowError

    if not isinstance(exc, DicomflowError):
        return
    from dicomflow.commands._common import report_error

    report_error(str(exc), as_json="--json" in sys.argv[1:])
    raise SystemExit(1) from None


if __name__ == "__main__":
    main()
