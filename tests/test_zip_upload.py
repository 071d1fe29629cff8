"""ZIP upload in the admin, processed by a REAL Celery worker (filesystem broker, same SQLite file).

Stages are observed with an SQLite trigger that logs every change of the upload row's status /
stage / done / total as the worker commits it — nothing in the code under test is replaced.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from dicomflow.catalog.selectors import catalog_counts
from dicomflow.intake import uploads
from dicomflow.intake.models import ImportRun, UploadStage, UploadStatus, ZipUpload
from dicomflow.testing.synth import PatientSpec, write_image_series, write_multi_patient_zip
from fixtures_celery import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

STAGE_ORDER = ["initialise", "extract", "import", "clean_up", "finalise", "done"]


@pytest.fixture
def stage_log():
    """Every committed change of (status, stage, done, total) of any upload, in order, as (status, stage, percent)."""
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute("CREATE TABLE IF NOT EXISTS test_upload_log "
                      "(seq SERIAL PRIMARY KEY, upload_id integer, status text, stage text, done integer, total integer)")
            c.execute("DELETE FROM test_upload_log")
            c.execute(
                "CREATE OR REPLACE FUNCTION test_upload_log_f() RETURNS trigger AS $$ BEGIN "
                "IF OLD.status IS DISTINCT FROM NEW.status OR OLD.stage IS DISTINCT FROM NEW.stage "
                "OR OLD.done IS DISTINCT FROM NEW.done OR OLD.total IS DISTINCT FROM NEW.total THEN "
                "INSERT INTO test_upload_log (upload_id, status, stage, done, total) "
                "VALUES (NEW.id, NEW.status, NEW.stage, NEW.done, NEW.total); END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            c.execute("DROP TRIGGER IF EXISTS test_upload_log_t ON intake_zipupload")
            c.execute("CREATE TRIGGER test_upload_log_t AFTER UPDATE ON intake_zipupload "
                      "FOR EACH ROW EXECUTE FUNCTION test_upload_log_f()")
        else:
            c.execute("CREATE TABLE IF NOT EXISTS test_upload_log (seq INTEGER PRIMARY KEY, upload_id, status, stage, done, total)")
            c.execute("DELETE FROM test_upload_log")
            c.execute(
                "CREATE TRIGGER IF NOT EXISTS test_upload_log_t AFTER UPDATE ON intake_zipupload "
                "WHEN OLD.status IS NOT NEW.status OR OLD.stage IS NOT NEW.stage OR OLD.done IS NOT NEW.done "
                "OR OLD.total IS NOT NEW.total "
                "BEGIN INSERT INTO test_upload_log (upload_id, status, stage, done, total) "
                "VALUES (NEW.id, NEW.status, NEW.stage, NEW.done, NEW.total); END"
            )

    def read(upload_id: int) -> list[tuple[str, str, int]]:
        with connection.cursor() as c:
            c.execute("SELECT status, stage, done, total FROM test_upload_log WHERE upload_id = %s ORDER BY seq",
                      [upload_id])
            rows = c.fetchall()
        return [(status, stage, ZipUpload(status=status, stage=stage, done=done, total=total).percent)
                for status, stage, done, total in rows]

    yield read
    with connection.cursor() as c:
        if connection.vendor == "postgresql":
            c.execute("DROP TRIGGER IF EXISTS test_upload_log_t ON intake_zipupload")
            c.execute("DROP FUNCTION IF EXISTS test_upload_log_f()")
        else:
            c.execute("DROP TRIGGER IF EXISTS test_upload_log_t")
        c.execute("DROP TABLE IF EXISTS test_upload_log")


@pytest.fixture(scope="module")
def multi_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("zips") / "three_patients.zip"
    return write_multi_patient_zip(path, n_patients=3, n_slices=4, rows=16, cols=16, seed="zip-upload-test")


def upload_via_admin(client, path: Path) -> ZipUpload:
    with open(path, "rb") as fh:
        response = client.post(reverse("admin:intake_zipupload_add"), {"file": fh})
    assert response.status_code == 302, response.content[:2000]
    upload = ZipUpload.objects.latest("id")
    assert upload.status == UploadStatus.PENDING and upload.original_name == path.name
    return upload


def wait_finished(upload: ZipUpload, worker, timeout: float = 90) -> ZipUpload:
    return wait_for(
        lambda: ZipUpload.objects.filter(pk=upload.pk, status__in=[UploadStatus.FINISHED, UploadStatus.FAILED]).first(),
        timeout=timeout, worker=worker, what=f"ZIP upload {upload.pk} to finish",
    )


def test_admin_upload_process_now_stages_and_catalog(admin_client, multi_zip, celery_worker_process, stage_log):
    upload = upload_via_admin(admin_client, multi_zip.path)
    assert Path(upload.file.path).is_file()

    response = admin_client.post(reverse("admin:intake_zipupload_process", args=[upload.pk]))
    assert response.status_code == 302 and response.url == reverse("intake:upload-progress", args=[upload.pk])
    page = admin_client.get(response.url)
    assert page.status_code == 200 and b"df-bar" in page.content

    done = wait_finished(upload, celery_worker_process)
    assert done.status == UploadStatus.FINISHED, done.error
    assert (done.stage, done.percent) == (UploadStage.DONE, 100)
    assert done.task_id and done.started_at <= done.finished_at

    log = stage_log(upload.pk)
    stages = [stage for _, stage, _ in log]
    assert [s for s in STAGE_ORDER if s in stages] == STAGE_ORDER  # every stage reported
    assert stages == sorted(stages, key=STAGE_ORDER.index)  # in order
    percents = [p for _, _, p in log]
    assert percents == sorted(percents) and percents[-1] == 100
    assert any(0 < p < 100 for p in percents)
    assert log[-1][0] == UploadStatus.FINISHED

    n = multi_zip.n_files
    assert (done.files_seen, done.instances_new, done.instances_duplicate) == (n, n, 0)
    assert (done.patients, done.studies, done.series) == (3, 3, 3)
    assert catalog_counts() == {"patients": 3, "studies": 3, "series": 3, "instances": n}
    assert not Path(settings.MEDIA_ROOT, upload.file.name).exists()  # clean up removed the ZIP

    status = admin_client.get(reverse("intake:upload-progress-json", args=[upload.pk])).json()
    assert status["status"] == "finished" and status["percent"] == 100 and status["finished"]
    result = admin_client.get(reverse("intake:upload-result", args=[upload.pk]))
    assert result.status_code == 200
    assert f'<td id="df-new">{n}</td>'.encode() in result.content

    # The same ZIP again: every file is a duplicate and the catalog does not change.
    again = upload_via_admin(admin_client, multi_zip.path)
    admin_client.post(reverse("admin:intake_zipupload_process", args=[again.pk]))
    again = wait_finished(again, celery_worker_process)
    assert again.status == UploadStatus.FINISHED
    assert (again.instances_new, again.instances_duplicate) == (0, n)
    assert catalog_counts()["instances"] == n


def test_redelivered_task_and_second_request_do_no_harm(admin_client, celery_worker_process, tmp_path):
    info = write_multi_patient_zip(tmp_path / "one.zip", n_patients=1, n_slices=3, rows=16, cols=16)
    upload = upload_via_admin(admin_client, info.path)
    assert uploads.request_processing([upload.pk]) == [upload.pk]
    done = wait_finished(upload, celery_worker_process)
    assert done.status == UploadStatus.FINISHED
    runs = ImportRun.objects.count()

    # A re-delivered task (same id) loses the conditional update Pending → In progress.
    from dicomflow.intake.tasks import process_zip_upload

    from django_celery_results.models import TaskResult

    redelivered = process_zip_upload.apply_async((upload.pk,), task_id=f"{done.task_id}-again")
    assert uploads.process_upload(upload.pk) == {"upload": upload.pk, "skipped": True}
    assert uploads.request_processing([upload.pk]) == []  # Completed is not queued again
    finished = wait_for(
        lambda: TaskResult.objects.filter(task_id=redelivered.id, status="SUCCESS").first(),
        worker=celery_worker_process, what="the re-delivered task",
    )
    assert '"skipped": true' in finished.result
    after = ZipUpload.objects.get(pk=upload.pk)
    assert (after.status, after.instances_new, after.finished_at) == (UploadStatus.FINISHED, 3, done.finished_at)
    assert ImportRun.objects.count() == runs


def test_bulk_action_processes_selected_uploads(admin_client, celery_worker_process, tmp_path):
    ups = []
    for k in range(2):
        info = write_multi_patient_zip(tmp_path / f"bulk{k}.zip", n_patients=2, n_slices=2, rows=16, cols=16)
        ups.append(upload_via_admin(admin_client, info.path))
    untouched = upload_via_admin(admin_client, info.path)
    response = admin_client.post(
        reverse("admin:intake_zipupload_changelist"),
        {"action": "process_selected", "_selected_action": [u.pk for u in ups]},
    )
    assert response.status_code == 302
    for u in ups:
        done = wait_finished(u, celery_worker_process)
        assert done.status == UploadStatus.FINISHED and done.instances_new == 4
    assert ZipUpload.objects.get(pk=untouched.pk).status == UploadStatus.PENDING
    assert catalog_counts()["patients"] == 4


def _traversal_zip(tmp_path: Path) -> Path:
    series = write_image_series(tmp_path / "ok", PatientSpec(patient_id="ZIPSAFE1"), "CT", 2, 16, 16)
    path = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in series.paths:
            zf.write(p, f"good/{p.name}")
        zf.writestr("../../escaped.dcm", series.paths[0].read_bytes())
        zf.writestr("/abs/escaped2.dcm", b"x" * 100)
    return path


def test_malicious_members_are_ignored_with_reasons(admin_client, celery_worker_process, tmp_path):
    upload = upload_via_admin(admin_client, _traversal_zip(tmp_path))
    admin_client.post(reverse("admin:intake_zipupload_process", args=[upload.pk]))
    done = wait_finished(upload, celery_worker_process)
    assert done.status == UploadStatus.FINISHED
    assert (done.files_seen, done.instances_new, done.ignored_count) == (4, 2, 2)
    ignored = {e["path"]: e["reason"] for e in done.import_run.ignored}
    assert set(ignored) == {"sneaky.zip!../../escaped.dcm", "sneaky.zip!/abs/escaped2.dcm"}
    assert all(reason for reason in ignored.values())
    assert not list(Path(settings.HOME).rglob("escaped*.dcm"))
    page = admin_client.get(reverse("intake:upload-result", args=[upload.pk])).content.decode()
    for path, reason in ignored.items():
        assert path in page and reason.split("(")[0].strip()[:30] in page.replace("&#x27;", "'")


def _bomb_zip(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.zip"
    chunk = bytes(1024 * 1024)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("zeros.dcm", "w", force_zip64=True) as member:
            for _ in range(80):
                member.write(chunk)
    assert path.stat().st_size < 200_000
    return path


def test_bomb_and_damaged_zip_fail_with_a_clear_error(admin_client, celery_worker_process, tmp_path):
    bomb = upload_via_admin(admin_client, _bomb_zip(tmp_path))
    damaged = uploads.create_upload(SimpleUploadedFile("damaged.zip", b"PK\x03\x04" + b"\x00" * 64))
    uploads.request_processing([bomb.pk, damaged.pk])
    for upload, expected in ((bomb, "bomb.zip"), (damaged, "damaged.zip")):
        done = wait_finished(upload, celery_worker_process)
        assert done.status == UploadStatus.FAILED
        assert done.error.startswith(expected)
        page = admin_client.get(reverse("intake:upload-error", args=[upload.pk]))
        assert page.status_code == 200
        assert done.error.encode()[:40] in page.content
        assert Path(done.file.path).exists()  # kept, so it can be processed again
        change = admin_client.get(reverse("admin:intake_zipupload_change", args=[upload.pk]))
        assert change.status_code == 200 and b"Process now" not in change.content
        listing = admin_client.get(reverse("admin:intake_zipupload_changelist")).content.decode()
        assert f'value="{upload.pk}">Process now</button>' in listing  # failed: can be retried
    assert catalog_counts()["instances"] == 0
    assert ZipUpload.objects.get(pk=damaged.pk).stage == UploadStage.INITIALISE


def test_upload_form_refuses_non_zip_and_pages_need_staff(admin_client, client):
    response = admin_client.post(
        reverse("admin:intake_zipupload_add"), {"file": SimpleUploadedFile("notes.zip", b"hello")}
    )
    assert response.status_code == 200 and b"not a ZIP archive" in response.content
    assert not ZipUpload.objects.exists()
    upload = uploads.create_upload(SimpleUploadedFile("x.zip", _empty_zip()))
    for name in ("upload-progress", "upload-progress-json", "upload-result", "upload-error"):
        anonymous = client.get(reverse(f"intake:{name}", args=[upload.pk]))
        assert anonymous.status_code == 302 and "/admin/login/" in anonymous.url
        assert admin_client.get(reverse(f"intake:{name}", args=[upload.pk])).status_code == 200
    assert client.post(reverse("admin:intake_zipupload_process", args=[upload.pk])).status_code == 302
    assert ZipUpload.objects.get(pk=upload.pk).task_id == ""  # anonymous POST queued nothing


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


def test_catalog_admin_lists_searches_and_is_view_only(admin_client, multi_zip):
    """What users see first after an upload: the catalog in the admin (view only, searchable)."""
    from dicomflow.catalog.models import Instance, Patient, Series
    from dicomflow.intake.services import import_paths

    import_paths([multi_zip.path], workers=1)
    patient = multi_zip.patients[1]
    listing = admin_client.get(reverse("admin:catalog_patient_changelist"), {"q": patient.patient_id})
    assert listing.status_code == 200
    assert patient.patient_id.encode() in listing.content
    assert multi_zip.patients[0].patient_id.encode() not in listing.content
    series = Series.objects.get(study__patient__patient_id=patient.patient_id)
    by_modality = admin_client.get(reverse("admin:catalog_series_changelist"), {"modality__exact": "CT"})
    assert by_modality.status_code == 200 and series.series_instance_uid.encode() in by_modality.content
    assert b'<td class="field-n_instances">4</td>' in by_modality.content  # instance count per series
    instance = Instance.objects.filter(series=series).first()
    detail = admin_client.get(reverse("admin:catalog_instance_change", args=[instance.pk]))
    assert detail.status_code == 200 and b"Image information" in detail.content
    assert admin_client.get(reverse("admin:catalog_patient_add")).status_code == 403
    p = Patient.objects.get(patient_id=patient.patient_id)
    assert admin_client.post(reverse("admin:catalog_patient_delete", args=[p.pk]), {"post": "yes"}).status_code == 403
    assert Patient.objects.filter(pk=p.pk).exists()


def test_stuck_upload_can_be_abandoned_retried_and_deleted(admin_client, tmp_path, celery_worker_process):
    """A worker lost mid-way leaves In progress (re-deliveries do nothing); the admin can recover it."""
    info = write_multi_patient_zip(tmp_path / "stuck.zip", n_patients=1, n_slices=2, rows=16, cols=16)
    upload = upload_via_admin(admin_client, info.path)
    ZipUpload.objects.filter(pk=upload.pk).update(status=UploadStatus.RUNNING, stage=UploadStage.IMPORT)
    assert uploads.process_upload(upload.pk)["skipped"] is True
    changelist = reverse("admin:intake_zipupload_changelist")
    admin_client.post(changelist, {"action": "abandon_selected", "_selected_action": [upload.pk]})
    upload.refresh_from_db()
    assert upload.status == UploadStatus.FAILED and "process it again" in upload.error
    assert uploads.request_processing([upload.pk]) == [upload.pk]
    assert wait_finished(upload, celery_worker_process).status == UploadStatus.FINISHED
    assert catalog_counts()["instances"] == 2

    other = upload_via_admin(admin_client, info.path)
    stored = Path(other.file.path)
    assert stored.exists()
    admin_client.post(changelist, {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"})
    assert not ZipUpload.objects.filter(pk=other.pk).exists() and not stored.exists()


def test_conflicting_copy_is_reported_and_stored_copy_kept(admin_client, celery_worker_process, tmp_path):
    import pydicom

    from dicomflow.catalog.models import Instance
    from dicomflow.intake.services import import_paths

    series = write_image_series(tmp_path / "orig", PatientSpec(patient_id="ZIPCONF1"), "CT", 3, 16, 16)
    import_paths([tmp_path / "orig"], workers=1)
    changed = pydicom.dcmread(series.paths[0])
    changed.SeriesDescription = "edited elsewhere"
    edited = tmp_path / "edited.dcm"
    changed.save_as(edited)
    path = tmp_path / "with_conflict.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(edited, "export/first.dcm")
        zf.write(series.paths[1], "export/second.dcm")
    stored = Instance.objects.get(sop_instance_uid=changed.SOPInstanceUID)
    before = (Path(settings.STORE_DIR) / stored.stored_path).read_bytes()

    upload = upload_via_admin(admin_client, path)
    uploads.request_processing([upload.pk])
    done = wait_finished(upload, celery_worker_process)
    assert (done.status, done.conflicts_count, done.instances_duplicate, done.instances_new) == (
        UploadStatus.FINISHED, 1, 1, 0,
    )
    [conflict] = done.import_run.conflicts
    assert conflict["path"] == "with_conflict.zip!export/first.dcm" and conflict["reason"]
    assert (Path(settings.STORE_DIR) / stored.stored_path).read_bytes() == before
    page = admin_client.get(reverse("intake:upload-result", args=[upload.pk])).content.decode()
    assert "with_conflict.zip!export/first.dcm" in page and "Conflicts" in page


def test_file_names_on_the_result_page_need_catalog_permission(admin_client, client, celery_worker_process, tmp_path):
    from django.contrib.auth.models import Permission, User

    upload = upload_via_admin(admin_client, _traversal_zip(tmp_path))
    uploads.request_processing([upload.pk])
    assert wait_finished(upload, celery_worker_process).ignored_count == 2
    clerk = User.objects.create_user("clerk", password="pw-clerk-1", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_zipupload"))
    client.force_login(clerk)
    page = client.get(reverse("intake:upload-result", args=[upload.pk])).content.decode()
    assert 'id="df-ignored">2<' in page and "df-files-hidden" in page
    assert "escaped" not in page
    full = admin_client.get(reverse("intake:upload-result", args=[upload.pk])).content.decode()
    assert "sneaky.zip!../../escaped.dcm" in full and "df-files-hidden" not in full
