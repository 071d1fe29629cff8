"""Start an import's workers before the command line is even parsed.

Why: the ``dicomflow`` process spends its first ~0.15 s importing typer (and pydantic, which typer
uses to convert arguments) and parsing; Django then needs ~0.3 s more. Reading, hashing and
storing the files needs neither, so ``dicomflow import`` forks its workers first and lets them run
while the rest starts (see ``intake.import_command``).

Only a plain command line is recognised here (``import PATH... [--json] [--quiet|-q]
[--analyse] [--workers N]``, every path existing); anything else — ``--help``, an unknown option,
a missing path — starts nothing, and the command then runs as usual. The command takes the
early ingestion only if typer parsed the same paths and worker count; otherwise it is closed.
This module must not import typer, Django or pydicom.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

_FLAGS = {"--json", "--quiet", "-q", "--analyse"}
_early: tuple[list[Path], int, object] | None = None


def parse_import_args(args: list[str]) -> tuple[list[str], int] | None:
    """``(paths, workers)`` of a plain ``import`` command line (after ``import``), else None."""
    paths: list[str] = []
    workers = 0
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            paths.extend(rest)
            break
        if arg in _FLAGS:
            continue
        if arg == "--workers" or arg.startswith("--workers="):
            value = arg.partition("=")[2] if "=" in arg else next(rest, "")
            if not value.isdigit():
                return None
            workers = int(value)
            continue
        if arg.startswith("-"):
            return None  # --help, a typo, an option added later: typer decides
        paths.append(arg)
    return (paths, workers) if paths else None


def start_ingestion(paths, workers: int):
    """Fork the workers and start reading (no Django: settings are read from the plain module)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
    from dicomflow import settings as conf  # the plain module: reading it sets nothing up
    from dicomflow.core.archive import ArchiveLimits
    from dicomflow.core.ingest import Ingestion
    from dicomflow.core.store import FileStore

    return Ingestion(
        paths,
        conf.WORK_DIR,
        ArchiveLimits.from_env(),
        FileStore(conf.STORE_DIR, conf.DICOMFLOW_FSYNC),
        max(1, workers or conf.DICOMFLOW_IMPORT_WORKERS),
    )


def start_from_argv(argv: list[str]) -> None:
    """If ``argv`` (without the program name) is a plain import, start its ingestion now."""
    global _early
    if _early is not None or not argv or argv[0] != "import":
        return
    parsed = parse_import_args(argv[1:])
    if parsed is None or not all(os.path.exists(p) for p in parsed[0]):
        return
    from dicomflow.errors import DicomflowError

    try:
        ingestion = start_ingestion(parsed[0], parsed[1])
    except DicomflowError:
        return  # the command starts it again and reports the error its usual way
    _early = ([Path(p) for p in parsed[0]], parsed[1], ingestion)
    atexit.register(_close_untaken)


def take(paths: list[Path], workers: int):
    """The early ingestion if it was started for exactly these paths and worker count, else None."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if early[0] == list(paths) and early[1] == workers:
        return early[2]
    early[2].close()
    return None


def _close_untaken() -> None:
    """The command never took it (typer refused the command line): stop the workers."""
    global _early
    if _early is not None:
        _early[2].close()
        _early = None
