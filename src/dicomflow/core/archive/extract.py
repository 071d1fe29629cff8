"""Safe extraction of ZIP and TAR archives (also compressed TARs and archives inside archives).

Per member, what cannot be extracted safely is refused with a reason and the rest goes on:
``..`` and absolute or drive-letter names, links, devices and FIFOs, encrypted ZIP members,
names that would overwrite an earlier member, members over the single-member size limit.

The whole archive fails (an :class:`~dicomflow.errors.ArchiveBombError` or
:class:`~dicomflow.errors.ArchiveError`, and everything this extraction wrote is removed) when it
is corrupt or unreadable, declares or really produces more than the limits allow (total size,
compression ratio, member count), nests archives too deeply, has overlapping ZIP members, or a
member produces more bytes than its header declares. Declared sizes are only used to refuse early:
the limits are enforced on the bytes actually written, chunk by chunk, before each write.

ZIP members that are stored or deflated (what DICOM exports use) are decompressed here from the raw
data, so a member whose central-directory size lies is caught, not silently truncated; bzip2/LZMA
members go through :mod:`zipfile` (which stops at the declared size and checks the CRC).
"""

from __future__ import annotations

import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from dicomflow.core.archive.detect import OPENERS, ArchiveKind, archive_kind
from dicomflow.core.archive.limits import ArchiveLimits, Budget, archive_error, error_reason
from dicomflow.core.archive.members import (
    ExtractedFile,
    ExtractionResult,
    Refusal,
    RefusalCode,
    RefusedMember,
    member_parts,
)
from dicomflow.core.archive.tree import DestTree
from dicomflow.errors import ArchiveBombError, ArchiveError, StorageError

CHUNK = 1024 * 1024
_ZIP_SUPPORTED = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_ZIP_ENCRYPTED = 0x0001 | 0x0040  # traditional PKWARE encryption, strong encryption
_LOCAL_HEADER = 30
_MAX_EXTENDED_HEADER = 1024 * 1024  # pax / GNU long-name headers are read into memory by tarfile
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,  # writes raise StorageError (not an OSError), so these are read errors
    ValueError,
    NotImplementedError,
    struct.error,
)


def extract_archive(
    path: str | os.PathLike,
    dest_dir: str | os.PathLike,
    limits: ArchiveLimits | None = None,
    depth: int = 0,
    *,
    display_name: str | None = None,
) -> ExtractionResult:
    """Extract the archive at ``path`` into ``dest_dir`` (created if missing) within ``limits``.

    ``display_name`` (default: the file name) prefixes member names: ``name!inner/path``.
    ``depth`` is how deep this archive already sits inside others. Raises
    :class:`~dicomflow.errors.ArchiveError` (or its subclass ``ArchiveBombError``) for
    whole-archive failures, after removing everything it wrote;
    :class:`~dicomflow.errors.StorageError` if the destination cannot be written.
    """
    path = Path(path)
    display = display_name or path.name
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise archive_error(ArchiveError, display, f"cannot be read ({exc.strerror or exc})") from None
    budget = Budget(limits or ArchiveLimits(), display, size)
    return _extract(path, Path(dest_dir), display, depth, budget)


def _extract(
    path: Path, dest: Path, display: str, depth: int, budget: Budget, parent: DestTree | None = None
) -> ExtractionResult:
    if depth > budget.limits.max_depth:
        raise archive_error(
            ArchiveBombError, display, f"archives nested more than {budget.limits.max_depth} levels deep (max_depth)"
        )
    try:
        kind = archive_kind(path)
    except OSError as exc:
        raise archive_error(ArchiveError, display, f"cannot be read ({exc.strerror or exc})") from None
    if kind is None:
        raise archive_error(ArchiveError, display, "is not a ZIP or TAR archive")
    tree = DestTree(dest)
    job = _Extraction(path, display, depth, budget, tree)
    try:
        if kind is ArchiveKind.ZIP:
            job.run_zip()
        else:
            job.run_tar(kind)
    except ArchiveError:
        tree.rollback()
        raise
    except (*_READ_ERRORS, _CorruptHeader) as exc:
        tree.rollback()
        raise archive_error(ArchiveError, display, f"is corrupt or truncated ({_describe(exc)})") from None
    except BaseException:
        tree.rollback()
        raise
    finally:
        tree.close()
    if parent is not None:
        parent.adopt(tree)
    return job.result


def _write_all(fd: int, chunk: bytes, path: Path, display: str) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:  # reported as a storage problem, not as a damaged archive
        raise StorageError(f"cannot write {path} while extracting {display}: {exc.strerror or exc}") from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _HeaderTooLarge(Exception):
    pass


class _CorruptHeader(Exception):
    pass


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax/GNU extended headers larger than 1 MiB (tarfile reads them whole into memory)
    and damaged headers (tarfile would silently take one for the end of the archive)."""

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        try:
            return super().frombuf(buf, encoding, errors)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError) as exc:
            raise _CorruptHeader(str(exc)) from None

    def _proc_member(self, tarfile_):  # overrides a private hook, stable since Python 3.2
        if (
            self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                          tarfile.SOLARIS_XHDTYPE)
            and self.size > _MAX_EXTENDED_HEADER
        ):
            raise _HeaderTooLarge()
        return super()._proc_member(tarfile_)


class _CountingReader:
    """The decompressed TAR stream, refusing to expand beyond the ratio limit of its own file."""

    def __init__(self, stream, budget: Budget, display: str, size: int):
        self._stream = stream
        self._budget = budget
        self._display = display
        self._size = size
        self.consumed = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.consumed += len(data)
        if self._budget.too_compressed(self.consumed, self._size):
            raise archive_error(
                ArchiveBombError,
                self._display,
                f"decompresses to more than {self._budget.limits.max_ratio:g} times its own size "
                "(compression-ratio limit max_ratio)",
            )
        return data


class _Extraction:
    def __init__(self, path: Path, display: str, depth: int, budget: Budget, tree: DestTree):
        self.path = path
        self.display = display
        self.depth = depth
        self.budget = budget
        self.limits = budget.limits
        self.tree = tree
        self.result = ExtractionResult()

    # -- shared ------------------------------------------------------------------------------------
    def _error(self, reason: str, cls: type[ArchiveError] = ArchiveError) -> ArchiveError:
        return archive_error(cls, self.display, reason)

    def _member(self, raw_name: str, body) -> None:
        """Run ``body`` for one member, recording a refusal instead of failing the archive."""
        try:
            body()
        except Refusal as refusal:
            self.result.refused.append(RefusedMember(f"{self.display}!{raw_name}", refusal.reason, refusal.code))

    def _check_size(self, size: int) -> None:
        if size > self.limits.max_member_size:
            raise Refusal(
                RefusalCode.TOO_LARGE,
                f"member is {size} bytes, over the single-member limit of {self.limits.max_member_size} "
                "bytes (max_member_size)",
            )

    def _write(self, parts: tuple[str, ...], chunks: Iterable[bytes], compressed: int | None) -> None:
        """Stream ``chunks`` into root/parts, enforcing every limit before each write."""
        fd, path = self.tree.create_file(parts)
        name = "/".join(parts)
        written = 0
        try:
            try:
                for chunk in chunks:
                    written += len(chunk)
                    if written > self.limits.max_member_size:
                        raise self._error(
                            f"member {name} expands beyond the single-member limit of "
                            f"{self.limits.max_member_size} bytes (max_member_size)",
                            ArchiveBombError,
                        )
                    if compressed is not None and self.budget.too_compressed(written, compressed):
                        raise self._error(
                            f"member {name} expands more than {self.limits.max_ratio:g} times its compressed "
                            "size (compression-ratio limit max_ratio)",
                            ArchiveBombError,
                        )
                    self.budget.charge(self.display, len(chunk))
                    _write_all(fd, chunk, path, self.display)
            finally:
                os.close(fd)
        except BaseException:
            self.tree.discard_file(parts)
            raise
        self.result.bytes_written += written
        self._after_write(parts, path, written)

    def _after_write(self, parts: tuple[str, ...], path: Path, size: int) -> None:
        member = f"{self.display}!{'/'.join(parts)}"
        try:
            kind = archive_kind(path) if size >= 4 else None
        except OSError as exc:
            raise StorageError(f"cannot read back {path}: {exc.strerror or exc}") from exc
        if kind is None:
            self.result.files.append(ExtractedFile(path, member, size))
            return
        try:  # a nested archive: extract it beside itself, then drop the archive file
            sub = parts[:-1] + (parts[-1] + "!",)
            sub_dir = self.tree.make_dir(sub)
            try:
                inner = _extract(path, sub_dir, member, self.depth + 1, self.budget, self.tree)
            except ArchiveBombError:
                raise
            except ArchiveError as exc:
                self.tree.remove_dir(sub)
                raise Refusal(RefusalCode.NESTED_ARCHIVE, f"nested archive refused: {error_reason(exc)}") from None
            self.result.files.extend(inner.files)
            self.result.refused.extend(inner.refused)
            self.result.bytes_written += inner.bytes_written
        except Refusal as refusal:
            self.result.refused.append(RefusedMember(member, refusal.reason, refusal.code))
        finally:
            self.tree.discard_file(parts)
            self.result.bytes_written -= size  # the archive file itself is gone

    # -- ZIP -----------------------------------------------------------------------------------------
    def run_zip(self) -> None:
        size = os.path.getsize(self.path)
        declared = _zip_central_count(self.path, self.limits.max_members - self.budget.members)
        if declared is not None:
            self.budget.check_declared_members(self.display, declared)
        with zipfile.ZipFile(self.path) as zf, open(self.path, "rb") as fh:
            infos = zf.infolist()
            self.budget.check_declared_members(self.display, len(infos))
            self._check_zip_declared(infos, size)
            for info in infos:
                self.budget.count_member(self.display)
                self._member(info.filename, lambda info=info: self._zip_member(zf, fh, info))

    def _check_zip_declared(self, infos: list[zipfile.ZipInfo], size: int) -> None:
        total = sum(i.file_size for i in infos)
        self.budget.check_declared_total(self.display, total)
        for info in infos:
            if self.budget.too_compressed(info.file_size, info.compress_size):
                raise self._error(
                    f"member {info.filename} declares a compression ratio over "
                    f"{self.limits.max_ratio:g}:1 (compression-ratio limit max_ratio)",
                    ArchiveBombError,
                )
        if self.budget.too_compressed(total, size):
            raise self._error(
                f"declares {total} bytes uncompressed, more than {self.limits.max_ratio:g} times its size "
                "(compression-ratio limit max_ratio)",
                ArchiveBombError,
            )
        ordered = sorted(infos, key=lambda i: i.header_offset)
        for a, b in zip(ordered, ordered[1:]):
            if b.header_offset < a.header_offset + _LOCAL_HEADER + a.compress_size:
                raise self._error(
                    "members overlap each other (a zip-bomb construction)", ArchiveBombError
                )
        if ordered and ordered[-1].header_offset + _LOCAL_HEADER + ordered[-1].compress_size > size:
            raise self._error("is truncated (member data runs past the end of the file)")

    def _zip_member(self, zf: zipfile.ZipFile, fh, info: zipfile.ZipInfo) -> None:
        fmt = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or fmt == stat.S_IFDIR:
            return  # folder entries are never written: folders are made (safely) as files need them
        parts = member_parts(info.filename)
        if fmt == stat.S_IFLNK:
            raise Refusal(RefusalCode.SYMLINK, "symbolic link (links are never extracted)")
        if fmt not in (0, stat.S_IFREG):
            raise Refusal(RefusalCode.SPECIAL_FILE, "device, FIFO or socket entry (only regular files are extracted)")
        if info.flag_bits & _ZIP_ENCRYPTED:
            raise Refusal(
                RefusalCode.ENCRYPTED,
                "encrypted member (password-protected archives are not supported: re-create it without a password)",
            )
        if info.compress_type not in _ZIP_SUPPORTED:
            raise Refusal(
                RefusalCode.UNSUPPORTED,
                f"compression method {info.compress_type} is not supported (use Deflate or no compression)",
            )
        self._check_size(info.file_size)
        self._write(parts, self._zip_chunks(zf, fh, info), info.compress_size)

    def _zip_chunks(self, zf: zipfile.ZipFile, fh, info: zipfile.ZipInfo) -> Iterator[bytes]:
        name = info.filename
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            with zf.open(info) as src:
                while chunk := src.read(CHUNK):
                    yield chunk
            return
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER)
        if len(head) != _LOCAL_HEADER or head[:4] != b"PK\x03\x04":
            raise self._error(f"member {name} has no valid local header (corrupt archive)")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        fh.seek(info.header_offset + _LOCAL_HEADER + name_len + extra_len)
        left = info.compress_size
        inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        produced = 0
        crc = 0
        while True:
            if inflater is not None and inflater.unconsumed_tail:
                buf = inflater.unconsumed_tail
            elif left > 0:
                buf = fh.read(min(CHUNK, left))
                if not buf:
                    raise self._error("is truncated (member data runs past the end of the file)")
                left -= len(buf)
            else:
                buf = b""
            out = buf if inflater is None else inflater.decompress(buf, CHUNK)
            if out:
                produced += len(out)
                if produced > info.file_size:
                    raise self._error(
                        f"member {name} expands beyond its declared size of {info.file_size} bytes "
                        "(forged header)",
                        ArchiveBombError,
                    )
                crc = zlib.crc32(out, crc)
                yield out
            if inflater is None:
                if left == 0:
                    break
            elif inflater.eof:
                break
            elif not buf and not out:
                raise self._error(f"member {name} has compressed data that ends early (corrupt archive)")
        if produced != info.file_size:
            raise self._error(f"member {name} is shorter than its declared size (corrupt archive)")
        if crc != info.CRC:
            raise self._error(f"member {name} fails its CRC-32 check (corrupt archive)")

    # -- TAR -----------------------------------------------------------------------------------------
    def run_tar(self, kind: ArchiveKind) -> None:
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as raw:
            stream = OPENERS[kind](raw, "rb") if kind in OPENERS else raw
            try:
                reader = _CountingReader(stream, self.budget, self.display, size)
                try:
                    tf = tarfile.open(fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo)
                except _HeaderTooLarge:
                    raise self._error("has an extended header over 1 MiB", ArchiveBombError) from None
                with tf:
                    while True:
                        try:
                            info = tf.next()
                        except _HeaderTooLarge:
                            raise self._error("has an extended header over 1 MiB", ArchiveBombError) from None
                        if info is None:
                            break
                        tf.members.clear()  # stream mode: keep memory flat however many members
                        self.budget.count_member(self.display)
                        self._member(info.name, lambda info=info: self._tar_member(tf, info))
            finally:
                if stream is not raw:
                    stream.close()

    def _tar_member(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        if info.isdir():
            return  # folder entries (often "./") are never written: folders are made as files need them
        parts = member_parts(info.name)
        if info.issym():
            raise Refusal(RefusalCode.SYMLINK, "symbolic link (links are never extracted)")
        if info.islnk():
            raise Refusal(RefusalCode.HARDLINK, "hard link (links are never extracted)")
        if info.ischr() or info.isblk():
            raise Refusal(RefusalCode.SPECIAL_FILE, "device file (only regular files are extracted)")
        if info.isfifo():
            raise Refusal(RefusalCode.SPECIAL_FILE, "FIFO (only regular files are extracted)")
        if not info.isreg():
            raise Refusal(RefusalCode.UNSUPPORTED, "unsupported TAR member type (only regular files are extracted)")
        self._check_size(info.size)
        src = tf.extractfile(info)
        assert src is not None
        self._write(parts, iter(lambda: src.read(CHUNK), b""), None)


def _zip_central_count(path: Path, stop_after: int) -> int | None:
    """Count central-directory records before :mod:`zipfile` loads them all into memory.

    zipfile reads the whole central directory (sized by the end record, not by its member count,
    which can be forged), so a hostile archive could exhaust memory before any limit applies.
    Counting stops at ``stop_after``; None if the end record cannot be found (zipfile then reports
    the archive as corrupt).
    """
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = max(0, size - (22 + 65535))
        fh.seek(start)
        tail = fh.read()
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or pos + 22 > len(tail):
            return None
        cd_size, cd_offset = struct.unpack("<II", tail[pos + 12 : pos + 20])
        record_pos = start + pos
        if pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":  # zip64 end record locator
            (z64_offset,) = struct.unpack("<Q", tail[pos - 12 : pos - 4])
            fh.seek(z64_offset)
            record = fh.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                cd_size, cd_offset = struct.unpack("<QQ", record[40:56])
                record_pos = z64_offset
        cd_start = record_pos - cd_size  # like zipfile: tolerate data prepended to the archive
        if cd_start < 0:
            return None
        fh.seek(cd_start)
        count = 0
        while count <= stop_after:
            head = fh.read(46)
            if len(head) < 46 or head[:4] != b"PK\x01\x02":
                break
            name_len, extra_len, comment_len = struct.unpack("<HHH", head[28:34])
            fh.seek(name_len + extra_len + comment_len, os.SEEK_CUR)
            count += 1
        return count
