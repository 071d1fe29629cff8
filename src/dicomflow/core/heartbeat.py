"""Worker heartbeat files: a Celery worker touches one every few seconds, ``dicomflow serve`` restarts
a worker whose file has gone stale (hung, stopped, its event loop blocked)."""

from __future__ import annotations

import re
import time
from pathlib import Path

INTERVAL = 5.0


def heartbeat_path(run_dir: Path | str, node: str) -> Path:
    """The heartbeat file of the worker named ``node`` (``name@host``) in ``run_dir``."""
    return Path(run_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", node) + ".heartbeat")


def beat_forever(path: Path, interval: float = INTERVAL) -> None:
    """Touch ``path`` every ``interval`` seconds (a daemon thread's body)."""
    while True:
        try:
            path.touch()
        except OSError:
            pass
        time.sleep(interval)


def is_stale(path: Path, timeout: float) -> bool | None:
    """True when ``path`` was last touched more than ``timeout`` seconds ago; None when it is missing."""
    try:
        return time.time() - path.stat().st_mtime > timeout
    except FileNotFoundError:
        return None
