"""The catalog's fast multi-row insert stores what bulk_create stores; a racing writer is handled."""

import pytest
from django.db import connection
from django.utils import timezone

from dicomflow.catalog.bulk import insert_rows
from dicomflow.catalog.models import ImageInformation, Instance, Patient, Series, Study
from dicomflow.catalog.services import _IMAGE_DEFAULTS, CatalogWriter
from dicomflow.core.dicom.header import read_header
from dicomflow.core.ingest import ingest_file
from dicomflow.core.store import FileStore
from dicomflow.testing import synth


def _series() -> Series:
    patient = Patient.objects.create(patient_id="P1")
    study = Study.objects.create(patient=patient, study_instance_uid="1.2.3")
    return Series.objects.create(study=study, series_instance_uid="1.2.3.4")


def _raw(model, row_id: int, columns: list[str]) -> tuple:
    """The values as stored (no field conversion on the way back)."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(map(quote, columns))} FROM {quote(model._meta.db_table)} WHERE id = %s", [row_id]
        )
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True)
def test_insert_rows_stores_what_bulk_create_stores(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=1, rows=16, cols=16, seed=1)
    header = read_header(ct.paths[0])
    series = _series()
    now = timezone.now()
    fields = dict(series_id=series.id, sop_class_uid="1.2", instance_number=None, transfer_syntax_uid="1.2.840.10008.1.2.1",
                  sha256="ab" * 32, size=123, stored_path="a/b.dcm", received_from="test", received_at=now)
    by_orm = Instance.objects.bulk_create([Instance(sop_instance_uid="9.1", **fields)])[0]
    insert_rows(Instance, ("sop_instance_uid", *fields), [("9.2", *fields.values())])
    by_rows = Instance.objects.get(sop_instance_uid="9.2")
    same = [f.column for f in Instance._meta.concrete_fields if f.name not in ("id", "sop_instance_uid", "received_at")]
    assert _raw(Instance, by_rows.id, same) == _raw(Instance, by_orm.id, same)
    assert by_rows.received_at == now  # aware datetimes round-trip like the ORM's

    ImageInformation.objects.bulk_create([ImageInformation(instance_id=by_orm.id, **header.image)])
    insert_rows(ImageInformation, ("instance_id", *(k for k, _ in _IMAGE_DEFAULTS)),
                [(by_rows.id, *(header.image.get(k, d) for k, d in _IMAGE_DEFAULTS))])
    image_columns = [ImageInformation._meta.get_field(name).column for name, _ in _IMAGE_DEFAULTS]
    orm_image = ImageInformation.objects.get(instance_id=by_orm.id)
    fast_image = ImageInformation.objects.get(instance_id=by_rows.id)
    assert _raw(ImageInformation, fast_image.id, image_columns) == _raw(ImageInformation, orm_image.id, image_columns)
    assert fast_image.pixel_spacing == header.image["pixel_spacing"]  # JSON text, read back as a list


def _stored_series(tmp_path, n_slices: int, seed: int):
    """A small synthetic series already in a store, not yet catalogued: ``(store, stored files)``."""
    ct = synth.write_image_series(tmp_path / "ct", n_slices=n_slices, rows=16, cols=16, seed=seed)
    store = FileStore(tmp_path / "store", "never")
    return store, [ingest_file(p, p.name, store) for p in ct.paths]


def _racing_writer(store, taken, sha256: str, size: int, stored_path: str) -> CatalogWriter:
    """A writer under which another one catalogues ``taken``'s UID (with these values) between
    the read of existing rows and the insert."""

    class Racing(CatalogWriter):
        def _ensure_series(self, headers):
            super()._ensure_series(headers)
            if not Instance.objects.filter(sop_instance_uid=taken.header.sop_instance_uid).exists():
                Instance.objects.create(
                    series_id=self._series[taken.header.series_instance_uid],
                    sop_instance_uid=taken.header.sop_instance_uid, sop_class_uid=taken.header.sop_class_uid,
                    sha256=sha256, size=size, stored_path=stored_path,
                )

    return Racing(store, "test")


@pytest.mark.django_db(transaction=True)
def test_writer_falls_back_when_another_writer_took_a_uid(tmp_path):
    """Rows appear between the writer's read and its insert: the batch insert fails, row by row follows."""
    store, items = _stored_series(tmp_path, n_slices=3, seed=2)
    taken = items[1]
    outcome = _racing_writer(store, taken, taken.stored.sha256, taken.stored.size, taken.stored.relpath).record(items)
    assert sorted(i.display_name for i in outcome.new) == sorted(i.display_name for i in items if i is not taken)
    assert [i.display_name for i in outcome.duplicates] == [taken.display_name]
    assert Instance.objects.count() == 3
    assert ImageInformation.objects.count() == 2  # details only for the rows this writer created


@pytest.mark.django_db(transaction=True)
def test_a_racing_writer_with_other_bytes_makes_a_conflict_not_a_duplicate(tmp_path):
    """Same UID taken between read and insert, by a file with another sha256: a recorded conflict."""
    from dicomflow.catalog.models import InstanceConflict

    store, items = _stored_series(tmp_path, n_slices=2, seed=3)
    taken = items[0]
    outcome = _racing_writer(store, taken, "0" * 64, 1, "elsewhere/other.dcm").record(items)
    assert [i.display_name for i in outcome.new] == [items[1].display_name]
    assert outcome.duplicates == []
    assert [i.display_name for i, _ in outcome.conflicts] == [taken.display_name]
    conflict = InstanceConflict.objects.get()
    assert conflict.sha256 == taken.stored.sha256 and conflict.instance.sha256 == "0" * 64
    assert not store.path_of(taken.stored.relpath).exists()  # our surplus copy is not left behind
