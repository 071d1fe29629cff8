"""core.ingest.Ingestion: the worker pool and the background writeback of the store (no Django)."""

import threading

from dicomflow.core.archive import ArchiveLimits
from dicomflow.core.ingest import Ingestion, StoredFile
from dicomflow.core.store import FileStore
from dicomflow.testing import synth


def _writebacks() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "background-flush" and t.is_alive()]


def test_pool_ingests_every_file_and_flushes_in_the_background_for_batch(tmp_path):
    synth.write_image_series(tmp_path / "ct", n_slices=40, rows=16, cols=16, seed=7)
    store = FileStore(tmp_path / "store", "batch")
    ingestion = Ingestion([tmp_path / "ct"], tmp_path / "work", ArchiveLimits(), store, 2)
    try:
        assert len(_writebacks()) == 1
        results = list(ingestion)
    finally:
        ingestion.close()
    assert ingestion.seen == 40 and len(results) == 40
    assert all(isinstance(r, StoredFile) and r.stored.created for r in results)
    assert len({r.stored.relpath for r in results}) == 40
    for thread in threading.enumerate():
        if thread.name == "store-writeback":
            thread.join(timeout=5)  # told to stop at close(): ends after at most one more flush
    assert not _writebacks()


def test_no_background_flush_unless_the_policy_is_batch(tmp_path):
    synth.write_image_series(tmp_path / "ct", n_slices=4, rows=16, cols=16, seed=8)
    for policy in ("never", "always"):
        ingestion = Ingestion([tmp_path / "ct"], tmp_path / "work", ArchiveLimits(),
                              FileStore(tmp_path / f"store-{policy}", policy), 2)
        try:
            assert not _writebacks()
            assert len(list(ingestion)) == 4
        finally:
            ingestion.close()
