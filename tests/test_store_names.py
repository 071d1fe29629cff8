"""Store file names cannot collide for different SOP Instance UIDs (issue 14).

``X.`` imported before ``X`` used to take ``X.dcm`` and the genuine ``X`` was refused ("a different
file occupies…") with no conflict recorded. Now a non-conformant UID gets a hash suffix, and a
different file at an occupied path is stored beside it and catalogued (or recorded as a conflict).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from conftest import require_tool

from dicomflow.core.store import instance_file_name, relative_store_path, variant_path
from dicomflow.testing import synth
from dicomflow.testing.hostile import write_raw


def test_file_names_are_injective_in_the_uid():
    assert instance_file_name("1.2.3") == "1.2.3.dcm"
    names = {instance_file_name(uid) for uid in ("1.2.3", "1.2.3.", "1.2.3..", ".1.2.3", "1.2.3 ", "1.2/3",
                                                   "1.2_3", "1.2-3", "A.1", "a.1", "1.2.3" + "4" * 70)}
    assert len(names) == 11
    assert all("/" not in n and not n.startswith(".") and len(n) <= 70 for n in names)
    weird = instance_file_name("1.2.3.")
    assert weird.startswith("1.2.3_") and weird != "1.2.3.dcm"
    # a hashed name can never equal a plain one (plain names hold no "_"), nor a content variant
    assert "_" not in instance_file_name("1.2.840.10008.1")
    assert variant_path("p/s/r/1.2.3.dcm", "ab" * 32) == "p/s/r/1.2.3_vabababababababab.dcm"
    assert relative_store_path("P", "1.2", "1.3", "1.4.") != relative_store_path("P", "1.2", "1.3", "1.4")


def _pair(tmp_path: Path) -> tuple[Path, Path, str]:
    """Two slices of one series whose SOP Instance UIDs are ``X.`` and ``X``."""
    series = synth.write_image_series(tmp_path / "src", n_slices=2, rows=16, cols=16)
    first = pydicom.dcmread(series.paths[0])
    uid = str(first.SOPInstanceUID)
    from pydicom import config

    previous = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        first.SOPInstanceUID = uid + "."
        dotted = write_raw(first, tmp_path / "a" / "dotted.dcm")
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = previous
    second = pydicom.dcmread(series.paths[1])
    second.SOPInstanceUID = uid
    genuine = write_raw(second, tmp_path / "b" / "genuine.dcm")
    return dotted, genuine, uid


@pytest.mark.django_db(transaction=True)
def test_uid_with_trailing_dot_and_the_genuine_uid_are_both_catalogued(tmp_path):
    from dicomflow.catalog.models import Instance
    from dicomflow.intake.services import file_store, import_paths

    dotted, genuine, uid = _pair(tmp_path)
    first = import_paths([dotted.parent], workers=1)
    second = import_paths([genuine.parent], workers=1)
    assert (first.instances_new, second.instances_new) == (1, 1)
    assert second.conflicts == [] and second.ignored == []
    rows = dict(Instance.objects.values_list("sop_instance_uid", "stored_path"))
    assert set(rows) == {uid, uid + "."}
    assert rows[uid] != rows[uid + "."]
    store = file_store()
    assert pydicom.dcmread(store.path_of(rows[uid])).SOPInstanceUID == uid
    assert pydicom.dcmread(store.path_of(rows[uid + "."]), force=True).SOPInstanceUID == uid + "."


@pytest.mark.django_db(transaction=True)
def test_a_leftover_at_the_path_does_not_refuse_the_genuine_file_and_a_real_conflict_is_recorded(tmp_path):
    """A file without a row at the instance's path (a crash leftover): the genuine file is stored
    beside it and catalogued. The same UID with other bytes later: a recorded conflict."""
    from dicomflow.catalog.models import Instance, InstanceConflict
    from dicomflow.core.ingest import store_path_for
    from dicomflow.core.dicom.header import read_header
    from dicomflow.intake.services import file_store, import_paths

    series = synth.write_image_series(tmp_path / "src", n_slices=1, rows=16, cols=16)
    path = series.paths[0]
    store = file_store()
    occupied = store.path_of(store_path_for(read_header(path)))
    occupied.parent.mkdir(parents=True, exist_ok=True)
    occupied.write_bytes(b"leftover of an import that crashed before its commit")
    report = import_paths([path], workers=1)
    assert report.instances_new == 1 and report.conflicts == [] and report.ignored == []
    row = Instance.objects.get()
    assert store.path_of(row.stored_path).read_bytes() == path.read_bytes()
    assert occupied.read_bytes().startswith(b"leftover")  # never overwritten

    changed = pydicom.dcmread(path)
    changed.SeriesDescription = "changed"
    other = tmp_path / "other" / "changed.dcm"
    other.parent.mkdir()
    changed.save_as(other)
    again = import_paths([other], workers=1)
    assert again.instances_new == 0 and len(again.conflicts) == 1
    assert InstanceConflict.objects.filter(instance=row).count() == 1
    assert store.path_of(row.stored_path).read_bytes() == path.read_bytes()  # the catalogued copy is kept


@pytest.mark.django_db(transaction=True)
@pytest.mark.dcmtk
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "pynetdicom"])
def test_c_store_of_x_dot_then_x_catalogues_both(tmp_path, fast_path):
    from dicomflow.catalog.models import Instance
    from dicomflow.intake.network.scp import StorageSCP

    storescu = require_tool("storescu")
    dotted, genuine, uid = _pair(tmp_path)
    scp = StorageSCP("DFNAMES", 0, [], host="127.0.0.1", fast_path=fast_path, temp_dir=tmp_path / "in").start()
    try:
        for path in (dotted, genuine):
            sent = subprocess.run([storescu, "-aet", "MOD", "-aec", "DFNAMES", "127.0.0.1", str(scp.port), str(path)],
                                  env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60)
            assert sent.returncode == 0, sent.stderr
    finally:
        scp.stop()
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == {uid, uid + "."}
    assert scp.batcher.totals["conflicts"] == 0 and scp.batcher.totals["refused"] == 0
