"""Archive safety: every attack is a real crafted archive, extracted for real.

Each attack test asserts the specific refusal (code/exception and reason), that nothing was written
outside the destination and that no partial output remains.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from dicomflow.core.archive import (
    ArchiveKind,
    ArchiveLimits,
    InputFile,
    RefusalCode,
    RefusedInput,
    archive_kind,
    extract_archive,
    is_archive,
    iter_input_files,
)
from dicomflow.core.archive.extract import _zip_central_count
from dicomflow.errors import ArchiveBombError, ArchiveError, ConfigurationError

MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------------
@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A sandbox: archives in box/arch, extraction into box/dest, a sentinel folder box/outside."""
    (tmp_path / "arch").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_bytes(b"untouched")
    return tmp_path


def snapshot(root: Path, skip: str = "dest") -> dict[str, bytes | None]:
    """Every path under root (except root/skip) with its bytes (None for folders/links)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == skip or rel.startswith(skip + os.sep):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p == root / skip:
                continue
            out[os.path.relpath(p, root)] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def tree(dest: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under dest (links would show up as errors)."""
    files = {}
    for p in sorted(dest.rglob("*")):
        assert not p.is_symlink(), f"a link was created: {p}"
        if p.is_file():
            files[p.relative_to(dest).as_posix()] = p.read_bytes()
    return files


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists() or not any(dest.rglob("*")), f"partial output remains: {list(dest.rglob('*'))}"


def make_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: (name, bytes) or (ZipInfo, bytes)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members:
            if isinstance(name, zipfile.ZipInfo):
                name.compress_type = compression
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members, mode: str = "w", **kw) -> Path:
    """members: (TarInfo or name, bytes or None)."""
    with tarfile.open(path, mode, **kw) as tf:
        for info, data in members:
            if isinstance(info, str):
                info = tarfile.TarInfo(info)
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def zip_headers(data: bytes):
    """Offsets of (local headers, central headers, end record) of a well-formed ZIP in memory."""
    eocd = data.rindex(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    centrals, pos = [], cd_offset
    for _ in range(count):
        centrals.append(pos)
        n, m, k = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        pos += 46 + n + m + k
    locals_ = [struct.unpack("<I", data[c + 42 : c + 46])[0] for c in centrals]
    return locals_, centrals, eocd


def extract(box: Path, archive: Path, limits: ArchiveLimits | None = None):
    before = snapshot(box)
    try:
        return extract_archive(archive, box / "dest", limits)
    finally:
        assert snapshot(box) == before, "something outside the destination changed"


def codes(result) -> dict[str, RefusalCode]:
    return {r.member_name: r.code for r in result.refused}


# --- benign archives ----------------------------------------------------------------------------------
def test_benign_zip_extracts_bytes_equal(box):
    payload = {"CT/1.dcm": os.urandom(5000), "CT/2.dcm": b"\x00" * 1000 + os.urandom(10), "top.txt": b"hi"}
    archive = make_zip(box / "arch" / "study.zip", [("CT/", b"")] + list(payload.items()))
    result = extract(box, archive)
    assert tree(box / "dest") == payload
    assert sorted(f.member_name for f in result.files) == sorted(f"study.zip!{n}" for n in payload)
    assert all(f.path.read_bytes() == payload[f.member_name.split("!", 1)[1]] for f in result.files)
    assert result.refused == []
    assert result.bytes_written == sum(map(len, payload.values()))


def test_streamed_zip_with_data_descriptors_extracts(box):
    """Zippers writing to a pipe (Java, macOS Archive Utility) put sizes after the data (flag bit 3)."""

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.buf += b
            return len(b)

    sink = Unseekable()
    payload = {"s/1.dcm": os.urandom(100_000), "s/2.dcm": b"abc" * 50_000}
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in payload.items():
            zf.writestr(name, data)
    archive = box / "arch" / "streamed.zip"
    archive.write_bytes(bytes(sink.buf))
    assert all(i.flag_bits & 0x08 for i in zipfile.ZipFile(archive).infolist())
    result = extract(box, archive)
    assert tree(box / "dest") == payload and result.refused == []


@pytest.mark.parametrize("mode,kind", [("w:gz", ArchiveKind.TAR_GZ), ("w:bz2", ArchiveKind.TAR_BZ2),
                                       ("w:xz", ArchiveKind.TAR_XZ), ("w", ArchiveKind.TAR)])
def test_benign_tar_extracts_bytes_equal(box, mode, kind):
    payload = {"a/b/1.dcm": os.urandom(70000), "a/2.dcm": b"x" * 3 * MiB, "empty.dcm": b""}
    folder = tarfile.TarInfo("a")
    folder.type = tarfile.DIRTYPE
    archive = make_tar(box / "arch" / "data.bin", [(folder, None)] + list(payload.items()), mode=mode)
    assert archive_kind(archive) is kind
    result = extract(box, archive)
    assert tree(box / "dest") == payload
    assert sorted(f.member_name for f in result.files) == sorted(f"data.bin!{n}" for n in payload)


def test_tar_of_current_folder_has_no_spurious_refusals(box):
    """`tar czf x.tgz .` starts with a "./" folder entry and names members "./a/b"."""
    root = tarfile.TarInfo("./")
    root.type = tarfile.DIRTYPE
    sub = tarfile.TarInfo("./a")
    sub.type = tarfile.DIRTYPE
    archive = make_tar(box / "arch" / "dot.tgz", [(root, None), (sub, None), ("./a/b.dcm", b"b")], mode="w:gz")
    result = extract(box, archive)
    assert result.refused == []
    assert [f.member_name for f in result.files] == ["dot.tgz!a/b.dcm"]
    assert tree(box / "dest") == {"a/b.dcm": b"b"}


def test_detection_is_by_magic_not_name(box):
    zip_named_dcm = make_zip(box / "arch" / "image.dcm", [("x", b"1")])
    text_named_zip = box / "arch" / "notes.zip"
    text_named_zip.write_bytes(b"just text, no archive")
    gz_not_tar = box / "arch" / "one.dcm.gz"
    import gzip

    gz_not_tar.write_bytes(gzip.compress(b"\x00" * 600))
    # A DICOM file whose (free) preamble starts with a ZIP signature is DICOM, not an archive.
    dicom_polyglot = box / "arch" / "poly.dcm"
    dicom_polyglot.write_bytes(b"PK\x03\x04" + b"\x00" * 124 + b"DICM" + b"\x02\x00" * 10)
    assert is_archive(zip_named_dcm) and archive_kind(zip_named_dcm) is ArchiveKind.ZIP
    assert not is_archive(text_named_zip)
    assert not is_archive(gz_not_tar)
    assert not is_archive(dicom_polyglot)
    os.mkfifo(box / "arch" / "pipe.zip")
    assert not is_archive(box / "arch" / "pipe.zip")  # and returns at once: a FIFO is never opened
    with pytest.raises(ArchiveError, match="not a ZIP or TAR"):
        extract_archive(text_named_zip, box / "dest")
    assert_nothing_left(box / "dest")


# --- refused members (the rest is extracted) -----------------------------------------------------------
@pytest.mark.parametrize(
    "name,code",
    [
        ("../evil", RefusalCode.PATH_TRAVERSAL),
        ("ok/../../evil", RefusalCode.PATH_TRAVERSAL),
        ("..\\evil", RefusalCode.PATH_TRAVERSAL),
        ("C:\\evil", RefusalCode.DRIVE_LETTER),
        ("c:/evil", RefusalCode.DRIVE_LETTER),
        ("\\\\server\\share\\evil", RefusalCode.ABSOLUTE_PATH),
        ("ABSOLUTE", RefusalCode.ABSOLUTE_PATH),
    ],
)
@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_unsafe_names_refused(box, name, code, fmt):
    if name == "ABSOLUTE":
        name = str(box / "outside" / "evil")  # would land in the sentinel folder
    members = [("good.dcm", b"good"), (name, b"evil")]
    if fmt == "zip":
        archive = make_zip(box / "arch" / "a.zip", members)
    else:
        archive = make_tar(box / "arch" / "a.tar", members)
    result = extract(box, archive)
    assert codes(result) == {f"a.{fmt}!{name}": code}
    assert tree(box / "dest") == {"good.dcm": b"good"}
    assert not (box / "evil").exists() and not (box / "outside" / "evil").exists()


def test_overlong_or_too_deep_names_refused(box):
    deep = "/".join(["d"] * 100) + "/x.dcm"
    long = "n" * 1500 + ".dcm"
    archive = make_zip(box / "arch" / "n.zip", [(deep, b"1"), (long, b"2"), ("ok/x.dcm", b"3")])
    result = extract(box, archive)
    assert codes(result) == {f"n.zip!{deep}": RefusalCode.BAD_NAME, f"n.zip!{long}": RefusalCode.BAD_NAME}
    assert tree(box / "dest") == {"ok/x.dcm": b"3"}
    assert sorted(p.name for p in (box / "dest").iterdir()) == ["ok"]  # no folder chain left behind


def test_tar_symlink_then_write_through_it(box):
    """The classic: a link to a folder outside, then a file 'through' the link."""
    link = tarfile.TarInfo("lnk")
    link.type, link.linkname = tarfile.SYMTYPE, str(box / "outside")
    abs_link = tarfile.TarInfo("passwd")
    abs_link.type, abs_link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = make_tar(box / "arch" / "s.tar.gz", [(link, None), (abs_link, None), ("lnk/evil", b"evil")],
                       mode="w:gz")
    result = extract(box, archive)
    assert codes(result) == {"s.tar.gz!lnk": RefusalCode.SYMLINK, "s.tar.gz!passwd": RefusalCode.SYMLINK}
    assert "link" in result.refused[0].reason
    # The link was never made, so lnk/evil is an ordinary file inside dest.
    assert tree(box / "dest") == {"lnk/evil": b"evil"}
    assert sorted(p.name for p in (box / "outside").iterdir()) == ["keep.txt"]


def test_tar_hardlink_device_fifo_refused(box):
    hard = tarfile.TarInfo("hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/passwd"
    dev = tarfile.TarInfo("dev")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    blk = tarfile.TarInfo("blk")
    blk.type = tarfile.BLKTYPE
    fifo = tarfile.TarInfo("fifo")
    fifo.type = tarfile.FIFOTYPE
    archive = make_tar(box / "arch" / "t.tar", [(hard, None), (dev, None), (blk, None), (fifo, None),
                                                ("f.dcm", b"data")])
    result = extract(box, archive)
    assert codes(result) == {
        "t.tar!hard": RefusalCode.HARDLINK,
        "t.tar!dev": RefusalCode.SPECIAL_FILE,
        "t.tar!blk": RefusalCode.SPECIAL_FILE,
        "t.tar!fifo": RefusalCode.SPECIAL_FILE,
    }
    assert tree(box / "dest") == {"f.dcm": b"data"}


def test_zip_symlink_member_refused(box):
    link = zipfile.ZipInfo("lnk")
    link.create_system = 3
    link.external_attr = (0o120777 << 16)  # S_IFLNK | 0777 in the unix mode bits
    fifo = zipfile.ZipInfo("fifo")
    fifo.create_system = 3
    fifo.external_attr = (0o010644 << 16)  # S_IFIFO
    archive = make_zip(box / "arch" / "l.zip", [(link, str(box / "outside").encode()), (fifo, b""),
                                                ("lnk/evil", b"evil")])
    result = extract(box, archive)
    assert codes(result) == {"l.zip!lnk": RefusalCode.SYMLINK, "l.zip!fifo": RefusalCode.SPECIAL_FILE}
    assert tree(box / "dest") == {"lnk/evil": b"evil"}


def test_encrypted_zip_member_refused(box):
    archive = make_zip(box / "arch" / "e.zip", [("plain.dcm", b"plain"), ("secret.dcm", b"secret" * 100)])
    data = bytearray(archive.read_bytes())
    locals_, centrals, _ = zip_headers(bytes(data))
    # Set the "encrypted" general-purpose flag (bit 0) on the second member, in both headers.
    data[locals_[1] + 6] |= 0x01
    data[centrals[1] + 8] |= 0x01
    archive.write_bytes(bytes(data))
    result = extract(box, archive)
    assert codes(result) == {"e.zip!secret.dcm": RefusalCode.ENCRYPTED}
    assert "password" in result.refused[0].reason
    assert tree(box / "dest") == {"plain.dcm": b"plain"}


@pytest.mark.parametrize("fmt", ["zip", "tar"])
def test_duplicate_names_refused_first_kept(box, fmt):
    members = [("d/x.dcm", b"first"), ("d/x.dcm", b"second"), ("d\\x.dcm", b"third"), ("./d/x.dcm", b"4th")]
    if fmt == "zip":
        with pytest.warns(UserWarning):
            archive = make_zip(box / "arch" / "d.zip", members)
    else:
        archive = make_tar(box / "arch" / "d.tar", members)
    result = extract(box, archive)
    assert [r.code for r in result.refused] == [RefusalCode.DUPLICATE] * 3
    assert "overwrite" in result.refused[0].reason or "earlier member" in result.refused[0].reason
    assert tree(box / "dest") == {"d/x.dcm": b"first"}


def test_file_and_folder_with_same_name_conflict(box):
    archive = make_zip(box / "arch" / "c.zip", [("a", b"file"), ("a/b", b"under"), ("c/d", b"x"), ("c", b"y")])
    result = extract(box, archive)
    assert codes(result) == {"c.zip!a/b": RefusalCode.PATH_CONFLICT, "c.zip!c": RefusalCode.PATH_CONFLICT}
    assert tree(box / "dest") == {"a": b"file", "c/d": b"x"}


def test_existing_symlink_in_destination_is_not_followed(box):
    dest = box / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(box / "outside")
    (dest / "f").symlink_to(box / "outside" / "keep.txt")
    archive = make_zip(box / "arch" / "x.zip", [("sub/evil", b"evil"), ("f", b"overwrite"), ("ok", b"ok")])
    before = snapshot(box)
    result = extract_archive(archive, dest)
    assert snapshot(box) == before
    assert codes(result) == {"x.zip!sub/evil": RefusalCode.PATH_CONFLICT, "x.zip!f": RefusalCode.PATH_CONFLICT}
    assert (box / "outside" / "keep.txt").read_bytes() == b"untouched"
    assert sorted(p.name for p in (box / "outside").iterdir()) == ["keep.txt"]
    assert (dest / "ok").read_bytes() == b"ok"


def test_member_over_single_member_limit_refused(box):
    archive = make_zip(box / "arch" / "m.zip", [("big", os.urandom(2 * MiB)), ("small", b"s")])
    result = extract(box, archive, ArchiveLimits(max_member_size=MiB))
    assert codes(result) == {"m.zip!big": RefusalCode.TOO_LARGE}
    assert "max_member_size" in result.refused[0].reason
    assert tree(box / "dest") == {"small": b"s"}


# --- whole-archive failures: nothing may remain --------------------------------------------------------
def test_zero_filled_member_over_ratio_is_a_bomb(box):
    archive = make_zip(box / "arch" / "z.zip", [("ok.dcm", b"ok"), ("zeros.dcm", bytes(8 * MiB))])
    info = zipfile.ZipFile(archive).getinfo("zeros.dcm")
    assert info.file_size / info.compress_size > 100  # the test really makes a high ratio
    with pytest.raises(ArchiveBombError, match="max_ratio"):
        extract(box, archive, ArchiveLimits(max_ratio=100, ratio_grace_size=MiB))
    assert_nothing_left(box / "dest")
    # The same archive is fine when the output stays under the grace size.
    assert len(extract(box, archive, ArchiveLimits(max_ratio=100, ratio_grace_size=16 * MiB)).files) == 2


def test_declared_total_over_limit_refused_before_writing(box):
    archive = make_zip(box / "arch" / "t.zip", [(f"m{i}", os.urandom(MiB)) for i in range(5)])
    with pytest.raises(ArchiveBombError, match="max_total_size"):
        extract(box, archive, ArchiveLimits(max_total_size=4 * MiB))
    assert_nothing_left(box / "dest")


def test_tar_total_size_enforced_while_streaming(box):
    """TAR declares no total: the limit must hold on the bytes written, mid-member."""
    archive = make_tar(box / "arch" / "big.tar", [(f"m{i}.dcm", os.urandom(3 * MiB)) for i in range(4)])
    with pytest.raises(ArchiveBombError, match="max_total_size"):
        extract(box, archive, ArchiveLimits(max_total_size=8 * MiB))
    assert_nothing_left(box / "dest")


def test_tar_gz_zero_bomb_stopped_while_streaming(box):
    archive = make_tar(box / "arch" / "bomb.tgz", [("zeros.dcm", bytes(32 * MiB))], mode="w:gz")
    assert archive.stat().st_size < MiB
    with pytest.raises(ArchiveBombError, match="max_ratio"):
        extract(box, archive, ArchiveLimits(max_ratio=50, ratio_grace_size=2 * MiB))
    assert_nothing_left(box / "dest")


def test_zip_member_whose_declared_size_lies(box):
    """Central directory (and local header) claim 1000 bytes; the deflate stream holds 16 MiB."""
    real = bytes(16 * MiB)
    archive = make_zip(box / "arch" / "lie.zip", [("first.dcm", b"benign"), ("liar.dcm", real)])
    data = bytearray(archive.read_bytes())
    locals_, centrals, _ = zip_headers(bytes(data))
    fake_crc = zlib.crc32(real[:1000])
    struct.pack_into("<I", data, locals_[1] + 14, fake_crc)
    struct.pack_into("<I", data, locals_[1] + 22, 1000)
    struct.pack_into("<I", data, centrals[1] + 16, fake_crc)
    struct.pack_into("<I", data, centrals[1] + 24, 1000)
    archive.write_bytes(bytes(data))
    assert zipfile.ZipFile(archive).getinfo("liar.dcm").file_size == 1000
    # Declared sizes are all harmless, so only streaming can catch it.
    with pytest.raises(ArchiveBombError, match="declared size"):
        extract(box, archive, ArchiveLimits(max_total_size=10 * MiB, ratio_grace_size=MiB))
    assert_nothing_left(box / "dest")


def test_too_many_members(box):
    z = make_zip(box / "arch" / "n.zip", [(f"f{i}", b"") for i in range(20)])
    t = make_tar(box / "arch" / "n.tar", [(f"f{i}", b"") for i in range(20)])
    for archive in (z, t):
        with pytest.raises(ArchiveBombError, match="max_members"):
            extract(box, archive, ArchiveLimits(max_members=10))
        assert_nothing_left(box / "dest")


def test_forged_member_count_does_not_hide_members(box):
    """The end record claims 5 members; the central directory holds 20 (zipfile would load all)."""
    archive = make_zip(box / "arch" / "f.zip", [(f"f{i}", b"x") for i in range(20)])
    data = bytearray(archive.read_bytes())
    _, _, eocd = zip_headers(bytes(data))
    struct.pack_into("<HH", data, eocd + 8, 5, 5)
    archive.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(archive).infolist()) == 20
    # Counted from the central directory itself, before zipfile parses it (memory stays bounded).
    assert _zip_central_count(archive, 100) == 20 and _zip_central_count(archive, 10) == 11
    with pytest.raises(ArchiveBombError, match="max_members"):
        extract(box, archive, ArchiveLimits(max_members=10))
    assert_nothing_left(box / "dest")
    assert len(extract(box, archive, ArchiveLimits(max_members=20)).files) == 20


def to_zip64_end(data: bytes) -> bytes:
    """Rewrite a small ZIP's end record the ZIP64 way (as archives over 4 GiB or 65535 members have)."""
    _, _, eocd = zip_headers(data)
    count, cd_size, cd_offset = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    z64 = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd, 1)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return data[:eocd] + z64 + locator + end


def test_zip64_end_record_is_understood(box):
    archive = make_zip(box / "arch" / "z64.zip", [(f"f{i}", bytes([i]) * 100) for i in range(12)])
    archive.write_bytes(to_zip64_end(archive.read_bytes()))
    assert len(zipfile.ZipFile(archive).infolist()) == 12
    assert _zip_central_count(archive, 100) == 12
    with pytest.raises(ArchiveBombError, match="max_members"):
        extract(box, archive, ArchiveLimits(max_members=11))
    assert_nothing_left(box / "dest")
    result = extract(box, archive)
    assert tree(box / "dest") == {f"f{i}": bytes([i]) * 100 for i in range(12)}
    assert result.bytes_written == 1200


def test_overlapping_zip_members_are_a_bomb(box):
    archive = make_zip(box / "arch" / "o.zip", [("aaaa", bytes(MiB))])
    data = archive.read_bytes()
    _, centrals, eocd = zip_headers(data)
    cd = data[centrals[0] : eocd]
    second = cd.replace(b"aaaa", b"bbbb")  # a second entry pointing at the same local data
    count, cd_size, cd_offset = struct.unpack("<HII", data[eocd + 10 : eocd + 20])
    end = bytearray(data[eocd:])
    struct.pack_into("<HHII", end, 8, 2, 2, 2 * cd_size, cd_offset)
    archive.write_bytes(data[:eocd] + second + bytes(end))
    assert len(zipfile.ZipFile(archive).infolist()) == 2
    with pytest.raises(ArchiveBombError, match="overlap"):
        extract(box, archive)
    assert_nothing_left(box / "dest")


def test_oversized_pax_header_refused(box):
    archive = box / "arch" / "pax.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f.dcm")
        info.pax_headers = {"comment": "x" * (2 * MiB)}
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(ArchiveBombError, match="extended header"):
        extract(box, archive)
    assert_nothing_left(box / "dest")


@pytest.mark.parametrize("damage", ["truncate_zip", "flip_zip_data", "truncate_tgz", "garbage_tar"])
def test_corrupt_archive_fails_whole_and_cleans_up(box, damage):
    good = os.urandom(300_000)
    if "zip" in damage:
        archive = make_zip(box / "arch" / "c.zip", [("first.dcm", b"ok" * 1000), ("second.dcm", good)])
        data = bytearray(archive.read_bytes())
        if damage == "truncate_zip":
            data = data[: len(data) // 2]
        else:
            locals_, _, _ = zip_headers(bytes(data))
            middle = locals_[1] + 30 + len("second.dcm") + 150_000
            data[middle : middle + 64] = bytes(64)
    else:
        archive = make_tar(box / "arch" / "c.tgz", [("first.dcm", b"ok" * 1000), ("second.dcm", good)],
                           mode="w:gz")
        data = bytearray(archive.read_bytes())
        if damage == "truncate_tgz":
            data = data[: len(data) - 100_000]
        else:
            data = bytearray(tarfile.TarInfo("x").tobuf()[:512]) + bytearray(os.urandom(5000))
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError) as caught:
        extract(box, archive)
    assert not isinstance(caught.value, ArchiveBombError)
    assert "corrupt" in str(caught.value) or "truncated" in str(caught.value)
    assert_nothing_left(box / "dest")


# --- nesting ------------------------------------------------------------------------------------------
def nest(box: Path, levels: int, payload: bytes) -> Path:
    """levels=1: a.zip holds file.dcm; levels=2: l2.zip holds a.zip holding file.dcm; ..."""
    data = payload
    name = "file.dcm"
    for level in range(1, levels + 1):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(name, data)
            if level == 1:
                zf.writestr("sibling.dcm", b"sib")
        data, name = buf.getvalue(), f"l{level}.zip"
    path = box / "arch" / name
    path.write_bytes(data)
    return path


def test_nested_zip_and_tar_extract(box):
    inner_tar = io.BytesIO()
    with tarfile.open(fileobj=inner_tar, mode="w:gz") as tf:
        info = tarfile.TarInfo("t/x.dcm")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"tar!"))
    payload = os.urandom(2000)
    inner_zip = nest(box, 1, payload).read_bytes()
    archive = make_zip(box / "arch" / "outer.zip", [("in/inner.zip", inner_zip), ("p.tgz", inner_tar.getvalue()),
                                                    ("top.dcm", b"top")])
    result = extract(box, archive)
    names = {f.member_name: f.path.read_bytes() for f in result.files}
    assert names == {
        "outer.zip!in/inner.zip!file.dcm": payload,
        "outer.zip!in/inner.zip!sibling.dcm": b"sib",
        "outer.zip!p.tgz!t/x.dcm": b"tar!",
        "outer.zip!top.dcm": b"top",
    }
    assert result.bytes_written == sum(len(v) for v in names.values())
    # The nested archive files themselves are not left behind (they are not inputs).
    assert not (box / "dest" / "in" / "inner.zip").exists() and not (box / "dest" / "p.tgz").exists()
    assert all(box / "dest" in f.path.parents for f in result.files)


def test_nesting_at_the_limit_works_and_deeper_is_refused(box):
    at_limit = nest(box, 4, b"deep")  # l4.zip > l3.zip > l2.zip > l1.zip: three archives inside
    result = extract(box, at_limit, ArchiveLimits(max_depth=3))
    assert {f.member_name for f in result.files} == {
        "l4.zip!l3.zip!l2.zip!l1.zip!file.dcm", "l4.zip!l3.zip!l2.zip!l1.zip!sibling.dcm"}
    os.rename(box / "dest", box / "arch" / "kept")
    too_deep = nest(box, 5, b"deeper")
    with pytest.raises(ArchiveBombError, match="nested more than 3"):
        extract(box, too_deep, ArchiveLimits(max_depth=3))
    assert_nothing_left(box / "dest")


def test_nested_bomb_counts_against_the_outer_budget(box):
    inner = make_zip(box / "arch" / "inner.zip", [(f"m{i}", os.urandom(MiB)) for i in range(3)]).read_bytes()
    archive = make_zip(box / "arch" / "outer.zip", [("a.zip", inner), ("b.zip", inner)], zipfile.ZIP_STORED)
    with pytest.raises(ArchiveBombError, match="max_total_size"):
        extract(box, archive, ArchiveLimits(max_total_size=9 * MiB))
    assert_nothing_left(box / "dest")


def test_corrupt_nested_archive_is_one_refused_member(box):
    broken = make_zip(box / "arch" / "b.zip", [("x", os.urandom(5000))]).read_bytes()[:3000]
    archive = make_zip(box / "arch" / "outer.zip", [("broken.zip", broken), ("fine.dcm", b"fine")])
    result = extract(box, archive)
    assert codes(result) == {"outer.zip!broken.zip": RefusalCode.NESTED_ARCHIVE}
    assert "corrupt" in result.refused[0].reason or "truncated" in result.refused[0].reason
    assert tree(box / "dest") == {"fine.dcm": b"fine"}


# --- walking inputs -----------------------------------------------------------------------------------
def test_iter_input_files_walks_folders_and_opens_archives(box):
    src = box / "src"
    (src / "b").mkdir(parents=True)
    (src / "a.dcm").write_bytes(b"A")
    make_zip(src / "b" / "pack.zip", [("p/1.dcm", b"one"), ("../evil", b"x")])
    (src / "b" / "z.dcm").write_bytes(b"Z")
    (src / "bad.zip").write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    (src / "link_out").symlink_to(box / "outside" / "keep.txt")
    (src / "link_in").symlink_to(src / "a.dcm")
    (src / "link_dir").symlink_to(box / "outside")
    os.mkfifo(src / "fifo")
    work = box / "work"
    entries = list(iter_input_files([src, box / "missing"], work))
    shown = [(type(e).__name__, os.path.relpath(e.display_name, box), getattr(e, "reason", None)) for e in entries]
    files = [e for e in entries if isinstance(e, InputFile)]
    refused = {os.path.relpath(e.display_name, box): e.reason for e in entries if isinstance(e, RefusedInput)}
    assert [os.path.relpath(f.display_name, box) for f in files] == [
        "src/a.dcm", "src/b/pack.zip!p/1.dcm", "src/b/z.dcm", "src/link_in"], shown
    assert {f.path.read_bytes() for f in files} == {b"A", b"one", b"Z"}
    assert files[1].origin_archive == str(src / "b" / "pack.zip") and files[0].origin_archive is None
    assert work in files[1].path.parents
    assert set(refused) == {"src/b/pack.zip!../evil", "src/bad.zip", "src/fifo", "src/link_dir", "src/link_out",
                            "missing"}
    assert "traversal" in refused["src/b/pack.zip!../evil"]
    assert "corrupt" in refused["src/bad.zip"] or "truncated" in refused["src/bad.zip"]
    assert "folder" in refused["src/link_dir"] and "outside" in refused["src/link_out"]
    assert "FIFO" in refused["src/fifo"] and refused["missing"] == "no such file or folder"
    # Deterministic: a second walk gives the same sequence.
    again = [(type(e).__name__, os.path.relpath(e.display_name, box)) for e in
             iter_input_files([src, box / "missing"], box / "work2")]
    assert again == [(a, b) for a, b, _ in shown]


def test_iter_input_files_is_lazy(box):
    """Archives are extracted when the walk reaches them, not up front."""
    src = box / "src"
    src.mkdir()
    (src / "0.dcm").write_bytes(b"0")
    make_zip(src / "1.zip", [("x.dcm", b"x")])
    work = box / "work"
    it = iter_input_files([src], work)
    first = next(it)
    assert isinstance(first, InputFile) and first.display_name.endswith("0.dcm")
    assert not work.exists() or not any(work.iterdir())
    assert [e.display_name.rsplit("!", 1)[-1] for e in it] == ["x.dcm"]
    # An archive named directly is opened too; its members carry the path as given.
    direct = list(iter_input_files([src / "1.zip"], box / "work3"))
    assert [(e.display_name, e.origin_archive) for e in direct] == [(f"{src / '1.zip'}!x.dcm", str(src / "1.zip"))]
    assert direct[0].path.read_bytes() == b"x"


def test_limits_from_env():
    limits = ArchiveLimits.from_env({
        "DICOMFLOW_ARCHIVE_MAX_TOTAL_SIZE": "50G", "DICOMFLOW_ARCHIVE_MAX_RATIO": "500",
        "DICOMFLOW_ARCHIVE_MAX_DEPTH": "1", "DICOMFLOW_ARCHIVE_RATIO_GRACE_SIZE": "512MiB"})
    assert limits.max_total_size == 50 * 1024 * MiB and limits.max_ratio == 500
    assert limits.max_depth == 1 and limits.ratio_grace_size == 512 * MiB
    assert limits.max_members == ArchiveLimits().max_members
    with pytest.raises(ConfigurationError):
        ArchiveLimits.from_env({"DICOMFLOW_ARCHIVE_MAX_DEPTH": "3G"})
    with pytest.raises(ConfigurationError):
        ArchiveLimits(max_total_size=0)


def test_disk_full_is_a_storage_error_and_cleans_up(box):
    """A write failure (here: a file-size rlimit, like a full disk) is not blamed on the archive."""
    import subprocess
    import sys

    archive = make_zip(box / "arch" / "ok.zip", [("small", b"s" * 1000), ("big", os.urandom(3 * MiB))])
    script = (
        "import resource, signal, sys\n"
        "from dicomflow.core.archive import extract_archive\n"
        "from dicomflow.errors import StorageError, ArchiveError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, 2 * 1024 * 1024))\n"
        "try:\n"
        "    extract_archive(sys.argv[1], sys.argv[2])\n"
        "except StorageError as e:\n"
        "    print('storage', e); sys.exit(0)\n"
        "except ArchiveError as e:\n"
        "    print('archive', e); sys.exit(1)\n"
        "sys.exit(2)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(archive), str(box / "dest")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("storage") and "big" in proc.stdout
    assert_nothing_left(box / "dest")


def zero_bomb_zip(path: Path, mib: int) -> Path:
    """A ZIP holding ``mib`` MiB of zeros, written by hand from one reusable deflate segment."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, dictionary reset
    data = segment * mib + b"\x03\x00"  # + an empty final block
    size, crc, name = mib * MiB, 0, b"zeros.dcm"
    for _ in range(mib):
        crc = zlib.crc32(bytes(MiB), crc)
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                          len(name), 0, 0, 0, 0, 0, 0)
    cd_offset = len(local) + len(name) + len(data)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), cd_offset, 0)
    path.write_bytes(local + name + data + central + name + end)
    return path


def test_default_limits_stop_a_classic_bomb(box):
    """256 MiB of zeros in a ~250 KiB ZIP: refused by the default limits before anything is written."""
    archive = zero_bomb_zip(box / "arch" / "classic.zip", 256)
    assert zipfile.ZipFile(archive).getinfo("zeros.dcm").file_size == 256 * MiB
    assert archive.stat().st_size < MiB
    with pytest.raises(ArchiveBombError, match="max_ratio"):
        extract(box, archive)
    assert_nothing_left(box / "dest")
    # The hand-made format is valid: a small one (under the ratio grace size) extracts exactly.
    small = zero_bomb_zip(box / "arch" / "small.zip", 3)
    result = extract(box, small)
    assert tree(box / "dest") == {"zeros.dcm": bytes(3 * MiB)}
    assert result.bytes_written == 3 * MiB
