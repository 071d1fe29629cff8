"""Flush a file system in the background while worker processes write to it.

Why: left alone, Linux writes dirty pages back only after ~30 s or under memory pressure, so a job
that must end with its files on disk (the import's catalog syncs before each commit; a
de-identification job's released output) would find everything still to be written at its final
``syncfs``: for a 1000-slice CT ~0.3 s of I/O with idle CPUs at the very end. Flushing every 0.1 s
while the workers write overlaps that I/O with their work. Durability never depends on this
thread: each job still makes its own final ``syncfs``.
"""

from __future__ import annotations

import os
import threading

from dicomflow.core.store import syncfs

#: Seconds between flushes.
INTERVAL = 0.1


class BackgroundFlush(threading.Thread):
    """``syncfs`` of the file system holding ``root`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, root: str | os.PathLike, interval: float = INTERVAL):
        super().__init__(name="background-flush", daemon=True)
        self.root = os.fspath(root)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                syncfs(self.root)
            except OSError:
                return  # the job's own final sync reports problems with the file system

    def stop(self) -> None:
        """Stop flushing (not joined: a flush in progress may finish on its own)."""
        self.stopped.set()

    def __enter__(self) -> BackgroundFlush:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
