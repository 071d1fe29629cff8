"""Turn the paths a user gave (files, folders, archives) into the stream of files to import.

Policy, chosen so that a watched folder or an upload cannot pull in data from elsewhere:

- Paths given explicitly are taken as they are (a symbolic link you name yourself is followed).
- Inside a folder, entries are visited in name order (deterministic), depth first.
- Symbolic links found inside a folder: links to *folders* are never followed (no loops, no
  escaping the folder); links to *files* are followed only when the file's real path lies inside
  the real path of the folder being walked; both cases are otherwise reported as refused.
- Devices, FIFOs and sockets are refused (reading a FIFO would block the import).
- Archives (recognised by magic bytes, wherever they are found) are extracted one at a time, when
  the walk reaches them, into a fresh sub-folder of ``work_dir``; their members are yielded, never
  the archive itself. The caller removes ``work_dir`` once it has read the files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dicomflow.core.archive.detect import archive_kind
from dicomflow.core.archive.limits import ArchiveLimits, error_reason
from dicomflow.errors import ArchiveError


@dataclass(frozen=True)
class InputFile:
    """A regular file to import: on disk at ``path``, shown to users as ``display_name``."""

    path: Path
    display_name: str
    origin_archive: str | None = None  # display name of the outermost archive it came from


@dataclass(frozen=True)
class RefusedInput:
    """Something seen but not importable (an archive that failed, a refused member, a link...)."""

    display_name: str
    reason: str


def iter_input_files(
    paths: Iterable[str | os.PathLike], work_dir: str | os.PathLike, limits: ArchiveLimits | None = None
) -> Iterator[InputFile | RefusedInput]:
    """Yield every file to import from ``paths``, extracting archives into ``work_dir`` as reached."""
    walker = _Walker(Path(work_dir), limits or ArchiveLimits())
    for given in paths:
        display = os.fspath(given)
        try:
            st = os.stat(given)
        except FileNotFoundError:
            yield RefusedInput(display, "no such file or folder")
            continue
        except OSError as exc:
            yield RefusedInput(display, f"cannot be read ({exc.strerror or exc})")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from walker.folder(Path(given), display)
        elif stat.S_ISREG(st.st_mode):
            yield from walker.file(Path(given), display)
        else:
            yield RefusedInput(display, "not a regular file or folder (device, FIFO or socket)")


class _Walker:
    def __init__(self, work_dir: Path, limits: ArchiveLimits):
        self.work_dir = work_dir
        self.limits = limits
        self.count = 0
        self.real_work = os.path.realpath(work_dir)

    def _fresh_dir(self) -> Path:
        while True:
            self.count += 1
            candidate = self.work_dir / f"archive-{self.count:05d}"
            if not os.path.lexists(candidate):
                return candidate

    def file(self, path: Path, display: str) -> Iterator[InputFile | RefusedInput]:
        try:
            kind = archive_kind(path)
        except OSError as exc:
            yield RefusedInput(display, f"cannot be read ({exc.strerror or exc})")
            return
        if kind is None:
            yield InputFile(path, display, None)
            return
        from dicomflow.core.archive.extract import extract_archive  # only now: most inputs are not archives

        try:
            result = extract_archive(path, self._fresh_dir(), self.limits, display_name=display)
        except ArchiveError as exc:
            yield RefusedInput(display, error_reason(exc))
            return
        for extracted in result.files:
            yield InputFile(extracted.path, extracted.member_name, display)
        for refused in result.refused:
            yield RefusedInput(refused.member_name, refused.reason)

    def folder(self, root: Path, display_root: str) -> Iterator[InputFile | RefusedInput]:
        real_root = os.path.realpath(root)
        stack: list[Iterator[tuple[os.DirEntry, str]]] = []

        def listing(folder: str, display: str) -> Iterator[tuple[os.DirEntry, str]] | RefusedInput:
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                return RefusedInput(display, f"folder cannot be read ({exc.strerror or exc})")
            return iter([(e, os.path.join(display, e.name)) for e in entries])

        first = listing(os.fspath(root), display_root)
        if isinstance(first, RefusedInput):
            yield first
            return
        stack.append(first)
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                continue
            entry, display = nxt
            try:
                if entry.is_symlink():
                    yield from self._link(entry, display, real_root)
                elif entry.is_dir(follow_symlinks=False):
                    if os.path.realpath(entry.path) == self.real_work:
                        continue  # our own extraction output, when work_dir lies inside a walked folder
                    sub = listing(entry.path, display)
                    if isinstance(sub, RefusedInput):
                        yield sub
                    else:
                        stack.append(sub)
                elif entry.is_file(follow_symlinks=False):
                    yield from self.file(Path(entry.path), display)
                else:
                    yield RefusedInput(display, "not a regular file (device, FIFO or socket)")
            except OSError as exc:
                yield RefusedInput(display, f"cannot be read ({exc.strerror or exc})")

    def _link(self, entry: os.DirEntry, display: str, real_root: str) -> Iterator[InputFile | RefusedInput]:
        try:
            st = os.stat(entry.path)
        except OSError:
            yield RefusedInput(display, "broken symbolic link")
            return
        if stat.S_ISDIR(st.st_mode):
            yield RefusedInput(display, "symbolic link to a folder (not followed)")
            return
        target = os.path.realpath(entry.path)
        if os.path.commonpath([real_root, target]) != real_root:
            yield RefusedInput(display, "symbolic link to a file outside the folder (not followed)")
            return
        if not stat.S_ISREG(st.st_mode):
            yield RefusedInput(display, "symbolic link to a device, FIFO or socket (not followed)")
            return
        yield from self.file(Path(target), display)
