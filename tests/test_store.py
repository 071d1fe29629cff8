"""FileStore writes: complete files or none, never an overwrite, same result on both write paths."""

import hashlib
import io
import os
import stat

import pytest

from dicomflow.core.store import FileStore
from dicomflow.errors import StorageError


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_temp"])
def test_store_bytes_creates_once_and_never_overwrites(tmp_path, unnamed):
    store = FileStore(tmp_path / "store", "batch")
    if not unnamed:
        store._tmpfile = False
    elif not store._tmpfile:
        pytest.skip("no O_TMPFILE here")
    first = store.store_bytes(b"first", "p/st/se/a.dcm")
    assert first.created and first.sha256 == hashlib.sha256(b"first").hexdigest() and first.size == 5
    again = store.store_bytes(b"other bytes", "p/st/se/a.dcm")
    assert not again.created and again.sha256 == hashlib.sha256(b"other bytes").hexdigest()
    assert (tmp_path / "store/p/st/se/a.dcm").read_bytes() == b"first"
    assert _files(tmp_path / "store") == ["p/st/se/a.dcm"]  # no temp files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "store/p/st/se/a.dcm").st_mode) == 0o666 & ~umask
    assert store._tmpfile is unnamed  # the unnamed path really ran (or really was off)


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_temp"])
def test_lost_race_for_a_name_keeps_the_winner(tmp_path, unnamed):
    """Another writer links the name between our existence check and our link."""
    store = FileStore(tmp_path / "store", "always")
    store._tmpfile = store._tmpfile and unnamed
    target = tmp_path / "store/p/a.dcm"
    target.parent.mkdir(parents=True)
    original = store._write_new

    def write_new_after_rival(relpath, write, repeatable=False):
        target.write_bytes(b"rival")
        return original(relpath, write, repeatable)

    store._write_new = write_new_after_rival
    result = store.store_bytes(b"ours", "p/a.dcm")
    assert not result.created
    assert target.read_bytes() == b"rival"
    assert _files(tmp_path / "store") == ["p/a.dcm"]


def test_folder_removed_under_the_store_is_made_again(tmp_path):
    store = FileStore(tmp_path / "store", "never")
    store.store_bytes(b"one", "p/st/se/1.dcm")
    os.remove(tmp_path / "store/p/st/se/1.dcm")
    os.rmdir(tmp_path / "store/p/st/se")  # cached as existing by the store
    assert store.store_bytes(b"two", "p/st/se/2.dcm").created
    assert (tmp_path / "store/p/st/se/2.dcm").read_bytes() == b"two"


def test_streams_use_named_temp_files_and_errors_are_storage_errors(tmp_path):
    store = FileStore(tmp_path / "store", "always")
    result = store.store_stream(io.BytesIO(b"x" * 3_000_000), "p/b.dcm")
    assert result.created and result.size == 3_000_000
    assert (tmp_path / "store/p/b.dcm").stat().st_size == 3_000_000
    (tmp_path / "store/q").write_text("a file where a folder should be")
    with pytest.raises(StorageError):
        store.store_bytes(b"y", "q/c.dcm")


def test_stream_into_a_folder_removed_under_the_cache_is_stored(tmp_path):
    """Streams cannot be written twice, so the folder is made again before their bytes are read."""
    store = FileStore(tmp_path / "store", "never")
    store.store_stream(io.BytesIO(b"one"), "p/st/se/1.dcm")
    os.remove(tmp_path / "store/p/st/se/1.dcm")
    os.rmdir(tmp_path / "store/p/st/se")  # cached as existing by the store
    result = store.store_stream(io.BytesIO(b"two"), "p/st/se/2.dcm")
    assert result.created and (tmp_path / "store/p/st/se/2.dcm").read_bytes() == b"two"


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_temp"])
def test_store_errors_do_not_name_the_patient_folder(tmp_path, unnamed):
    """The store path's first component is the (sanitised) Patient ID: not for error messages."""
    store = FileStore(tmp_path / "store", "never")
    store._tmpfile = store._tmpfile and unnamed
    (tmp_path / "store/PAT12345").write_text("a file where the patient folder should be")
    for attempt in (lambda: store.store_bytes(b"y", "PAT12345/st/se/c.dcm"),
                    lambda: store.store_stream(io.BytesIO(b"y"), "PAT12345/st/se/c.dcm")):
        with pytest.raises(StorageError) as failed:
            attempt()
        assert "PAT12345" not in str(failed.value)
        assert str(tmp_path / "store") in str(failed.value)  # still says which store
    source = tmp_path / "received.dcm"
    source.write_bytes(b"z")
    with pytest.raises(StorageError) as failed:
        store.adopt(source, "PAT12345/st/se/d.dcm")
    assert "PAT12345" not in str(failed.value)
