"""Start an import's workers before the command line is even parsed, and skip typer's parser.

Why: the ``dicomflow`` process spends its first ~0.15 s importing typer and parsing (typer builds
pydantic adapters to convert arguments); Django then needs ~0.3 s more. Reading, hashing and
storing the files needs neither, so ``dicomflow import`` forks its workers first and lets them run
while the rest starts (see ``intake.import_command``), and a plain command line is handed to the
command directly (``cli.main``): ~70 ms less of start-up on the cores the workers need.

Only a plain command line is recognised here (``import PATH... [--json] [--quiet|-q]
[--analyse] [--workers N]``, every path existing) — values typer would parse the same way;
anything else — ``--help``, an unknown option, a missing path — starts nothing, and typer runs
the command as usual. The command takes the early ingestion only if it was started for the same
paths and worker count; otherwise it is closed. This module must not import typer, Django or
pydicom.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_FLAGS = {"--json": "as_json", "--quiet": "quiet", "-q": "quiet", "--analyse": "analyse"}
_early: tuple[list[Path], int, object] | None = None


@dataclass
class ImportArgs:
    """A plain ``import`` command line, as ``intake.import_command`` takes it."""

    paths: list[str]
    workers: int = 0
    as_json: bool = False
    quiet: bool = False
    analyse: bool = False


def parse_import_args(args: list[str]) -> ImportArgs | None:
    """The values of a plain ``import`` command line (``args`` after ``import``), else None."""
    parsed = ImportArgs(paths=[])
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            parsed.paths.extend(rest)
            break
        if arg in _FLAGS:
            setattr(parsed, _FLAGS[arg], True)
            continue
        if arg == "--workers" or arg.startswith("--workers="):
            value = arg.partition("=")[2] if "=" in arg else next(rest, "")
            if not (value.isascii() and value.isdigit()):
                return None  # e.g. "²" is a digit to isdigit() but not to int(): typer reports it
            parsed.workers = int(value)
            continue
        if arg.startswith("-"):
            return None  # --help, a typo, an option added later: typer decides
        parsed.paths.append(arg)
    return parsed if parsed.paths else None


def start_ingestion(paths, workers: int):
    """Fork the workers and start reading (no Django: settings are read from the plain module)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
    from dicomflow import settings as conf  # the plain module: reading it sets nothing up
    from dicomflow.core.ingest import Ingestion
    from dicomflow.core.store import FileStore
    from dicomflow.core.store_capacity import StoreCapacity

    if conf.DICOMFLOW_STORE_MAX_BYTES:  # the cap needs the catalogue's figure: import_paths starts it
        return None
    capacity = StoreCapacity(conf.STORE_DIR, 0, conf.DICOMFLOW_STORE_MIN_FREE_BYTES)
    return Ingestion(
        paths,
        conf.WORK_DIR,
        conf.ARCHIVE_LIMITS,
        FileStore(conf.STORE_DIR, conf.DICOMFLOW_FSYNC),
        max(1, workers or conf.DICOMFLOW_IMPORT_WORKERS),
        capacity=capacity if capacity.active else None,
    )


def start_from_argv(argv: list[str]) -> ImportArgs | None:
    """If ``argv`` (without the program name) is a plain import, start its ingestion now.

    Returns the parsed command line when it did (the caller may run the command with it).
    """
    global _early
    if _early is not None or not argv or argv[0] != "import":
        return None
    parsed = parse_import_args(argv[1:])
    if parsed is None or not all(os.path.exists(p) for p in parsed.paths):
        return None
    from dicomflow.errors import DicomflowError

    try:
        ingestion = start_ingestion(parsed.paths, parsed.workers)
    except DicomflowError:
        return None  # the command starts it again and reports the error its usual way
    if ingestion is None:
        return None
    _early = ([Path(p) for p in parsed.paths], parsed.workers, ingestion)
    atexit.register(_close_untaken)
    return parsed


def run_import(parsed: ImportArgs) -> None:
    """Run ``dicomflow import`` for a plain command line without typer (same values as its parser's)."""
    from dicomflow.commands.importing import import_files

    try:
        import_files(
            [Path(p) for p in parsed.paths],
            as_json=parsed.as_json,
            workers=parsed.workers,
            quiet=parsed.quiet,
            analyse_now=parsed.analyse,
        )
    except Exception as exc:
        typer = sys.modules.get("typer")  # `fail` loads typer to raise typer.Exit
        if typer is not None and isinstance(exc, typer.Exit):
            raise SystemExit(exc.exit_code) from None
        raise
    except KeyboardInterrupt:
        print("Aborted!", file=sys.stderr)  # what typer prints
        raise SystemExit(1) from None


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
