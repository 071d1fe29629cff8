"""A disk cap for the file store: refuse a new file *before* it is written when the store would grow
past its cap or the disk's free space would fall under a reserve.

- ``max_bytes`` (``DICOMFLOW_STORE_MAX_BYTES``, 0 = no cap): the most bytes the store may hold. The
  bytes held when an import starts are given (``used_bytes``, the catalog knows them); each file
  admitted adds its size to a counter shared by the import's forked worker processes, so two
  workers cannot both take the last free gigabyte;
- ``min_free_bytes`` (``DICOMFLOW_STORE_MIN_FREE_BYTES``, 0 = none): free space that must remain on
  the store's file system after the file (checked with ``statvfs`` for every new file, so it also
  sees what other programs write).

A refused file is an *ignored* file of the import with the reason — never a traceback — and the
caller raises the alarm once (:attr:`StoreCapacity.refused`). Duplicates (the name is taken in the
store already) take no room and are never refused. Pure Python: no Django.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


class StoreCapacity:
    """Admits new files into the store at ``root`` while the cap and the free-space reserve allow."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 0, min_free_bytes: int = 0, used_bytes: int = 0):
        self.root = str(root)
        self.max_bytes = max(0, int(max_bytes))
        self.min_free_bytes = max(0, int(min_free_bytes))
        ctx = multiprocessing.get_context("fork")
        self._used = ctx.Value("q", max(0, int(used_bytes)))  # shared with forked workers
        self._refused = ctx.Value("q", 0)

    @property
    def active(self) -> bool:
        return bool(self.max_bytes or self.min_free_bytes)

    @property
    def used_bytes(self) -> int:
        return self._used.value

    @property
    def refused(self) -> int:
        """Files refused so far (by every process sharing this object)."""
        return self._refused.value

    def refusal(self, size: int) -> str | None:
        """Why a new file of ``size`` bytes may not be stored (None: admitted, and counted)."""
        if self.min_free_bytes:
            try:
                free = shutil.disk_usage(self.root).free
            except OSError:
                free = None
            if free is not None and free - size < self.min_free_bytes:
                self._count_refusal()
                return (f"refused: the store's disk has {human_bytes(free)} free and must keep "
                        f"{human_bytes(self.min_free_bytes)} (DICOMFLOW_STORE_MIN_FREE_BYTES); "
                        "free space (dicomflow retention run) or raise the limit, then import again")
        if self.max_bytes:
            with self._used.get_lock():
                used = self._used.value
                if used + size > self.max_bytes:
                    refused = True
                else:
                    self._used.value = used + size
                    refused = False
            if refused:
                self._count_refusal()
                return (f"refused: the store holds {human_bytes(used)} and may hold at most "
                        f"{human_bytes(self.max_bytes)} (DICOMFLOW_STORE_MAX_BYTES); free space "
                        "(dicomflow retention run) or raise the cap, then import again")
        return None

    def _count_refusal(self) -> None:
        with self._refused.get_lock():
            self._refused.value += 1
