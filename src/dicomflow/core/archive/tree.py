"""Writing under one folder and nowhere else, with the means to take every write back.

Every path is opened one component at a time relative to directory file descriptors with
``O_NOFOLLOW``, so a symbolic link already inside the destination (planted by another process or a
previous run) is never followed; files are created with ``O_CREAT | O_EXCL``, so nothing existing is
ever overwritten. What this tree created is remembered so a failed extraction can remove it all.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dicomflow.core.archive.members import Refusal, RefusalCode
from dicomflow.errors import StorageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _refusal_or_raise(exc: OSError, where: Path) -> Refusal:
    if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EEXIST):
        return Refusal(RefusalCode.PATH_CONFLICT, "another member, file or link is in the way of this member's path")
    if exc.errno == errno.ENAMETOOLONG:
        return Refusal(RefusalCode.BAD_NAME, "member name is too long for the file system")
    raise StorageError(f"cannot write under {where}: {exc.strerror or exc}") from exc


class DestTree:
    """The destination folder of one extraction."""

    def __init__(self, root: Path):
        self.created_root = not os.path.lexists(root)
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
            self.root = Path(os.path.realpath(root))
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"cannot create the extraction folder {root}: {exc.strerror or exc}") from exc
        self._files: dict[tuple[str, ...], Path] = {}
        self._dirs: list[Path] = []
        self._adopted_files: list[Path] = []  # written by nested extractions inside this tree
        self._adopted_dirs: list[Path] = []

    def _open_dir(self, parts: tuple[str, ...], fresh_last: bool = False) -> int:
        """A descriptor of root/parts, creating missing folders; links on the way are refused."""
        fd = os.dup(self._root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                    self._dirs.append(self.root.joinpath(*parts[: i + 1]))
                except FileExistsError:
                    if fresh_last and i == len(parts) - 1:
                        raise Refusal(RefusalCode.PATH_CONFLICT, "its extraction folder already exists") from None
                except OSError as exc:
                    raise _refusal_or_raise(exc, self.root) from None
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refusal_or_raise(exc, self.root) from None
                os.close(fd)
                fd = next_fd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def create_file(self, parts: tuple[str, ...]) -> tuple[int, Path]:
        """Create root/parts exclusively; returns an open write descriptor and the path."""
        if parts in self._files:
            raise Refusal(RefusalCode.DUPLICATE, "duplicate member name: an earlier member with this path was kept")
        parent = self._open_dir(parts[:-1])
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o600, dir_fd=parent)
        except OSError as exc:
            raise _refusal_or_raise(exc, self.root) from None
        finally:
            os.close(parent)
        path = self.root.joinpath(*parts)
        self._files[parts] = path
        return fd, path

    def discard_file(self, parts: tuple[str, ...]) -> None:
        path = self._files.pop(parts, None)
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def make_dir(self, parts: tuple[str, ...]) -> Path:
        """Create a new, empty folder root/parts (refused if it already exists)."""
        os.close(self._open_dir(parts, fresh_last=True))
        return self.root.joinpath(*parts)

    def remove_dir(self, parts: tuple[str, ...]) -> None:
        path = self.root.joinpath(*parts)
        try:
            os.rmdir(path)
            self._dirs.remove(path)
        except (OSError, ValueError):
            pass

    def adopt(self, inner: DestTree) -> None:
        """Take over what a finished nested extraction wrote, so our rollback removes it too."""
        self._adopted_files += inner._adopted_files + list(inner._files.values())
        self._adopted_dirs += inner._adopted_dirs + inner._dirs

    def rollback(self) -> None:
        """Remove every file and folder this tree created (the destination too, if it made it)."""
        for path in reversed(self._adopted_files + list(self._files.values())):
            try:
                os.unlink(path)
            except OSError:
                pass
        self._files.clear()
        self._adopted_files.clear()
        for path in reversed(self._dirs + self._adopted_dirs):  # nested folders first: they are deeper
            try:
                os.rmdir(path)
            except OSError:
                pass
        self._dirs.clear()
        self._adopted_dirs.clear()
        if self.created_root:
            try:
                os.rmdir(self.root)
            except OSError:
                pass

    def close(self) -> None:
        os.close(self._root_fd)
