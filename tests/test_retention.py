"""Retention of working copies (datastore copies, job folders, uploaded bytes, export scratch) by age,
and the store's disk cap: new files refused with a reason per file before the disk fills, an alarm."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.utils import timezone

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.core.store_capacity import StoreCapacity
from dicomflow.errors import PermissionDeniedError
from dicomflow.intake.models import FolderIntake, WatchedFolder, ZipUpload
from dicomflow.intake.services import import_paths
from dicomflow.processing.models import Job
from dicomflow.processing.pipeline import job_dir
from dicomflow.processing.retention import apply_retention, run_retention
from dicomflow.progress import Status
from dicomflow.testing.synth import PatientSpec, write_image_series

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))
PATIENT = PatientSpec("RET-PAT-9", "Ahorn^Anna", "F", "19700101")


def _folder(path: Path, size: int = 1000) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "a.bin").write_bytes(b"x" * size)
    return path


@pytest.fixture
def aged(settings, tmp_path):
    """One old and one recent working copy of each kind, plus work that is not over."""
    settings.DICOMFLOW_RETAIN_DATASTORE_DAYS = 30
    settings.DICOMFLOW_RETAIN_JOB_DAYS = 30
    settings.DICOMFLOW_RETAIN_UPLOAD_DAYS = 7
    settings.DICOMFLOW_RETAIN_EXPORT_DAYS = 7
    now = timezone.now()
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    made = {}
    for name, status, ended in (("old", Status.FINISHED, old), ("recent", Status.FAILED, recent),
                                ("waiting", Status.WAITING, None)):
        job = Job.objects.create(project_key="RET", status=status, finished_at=ended)
        made[f"job-{name}"] = _folder(job_dir(job) / "deid", 2000).parent
    watched = WatchedFolder.objects.create(name="ret", path=str(tmp_path / "watched"))
    for name, ended in (("old", old), ("recent", recent)):
        copy = _folder(Path(settings.DATASTORE_DIR) / "folders" / f"ret-{name}-{os.getpid()}", 3000)
        FolderIntake.objects.create(watched_folder=watched, folder_name=name, source_path=str(tmp_path / name),
                                    copy_path=str(copy), status=Status.FINISHED, finished_at=ended)
        made[f"datastore-{name}"] = copy
    for name, ended in (("old", old), ("recent", now)):
        rel = f"zip_uploads/ret/{name}-{os.getpid()}.zip"
        (Path(settings.MEDIA_ROOT) / rel).parent.mkdir(parents=True, exist_ok=True)
        (Path(settings.MEDIA_ROOT) / rel).write_bytes(b"z" * 500)
        ZipUpload.objects.create(file=rel, status=Status.FINISHED, finished_at=ended)
        made[f"upload-{name}"] = Path(settings.MEDIA_ROOT) / rel
    scratch_old = _folder(Path(settings.WORK_DIR) / f"identified-ret{os.getpid()}", 700)
    past = time.time() - 20 * 86400
    for p in (scratch_old / "a.bin", scratch_old):
        os.utime(p, (past, past))
    made["export-old"] = scratch_old
    made["export-recent"] = _folder(Path(settings.WORK_DIR) / f"staging-ret{os.getpid()}", 700)
    made["other"] = _folder(Path(settings.WORK_DIR) / f"keep-me-{os.getpid()}", 10)
    os.utime(made["other"], (past, past))
    return made


@pytest.mark.django_db(transaction=True)
def test_dry_run_lists_and_keeps_then_the_run_deletes_only_old_ended_copies(aged, caplog):
    expect_gone = {"job-old", "datastore-old", "upload-old", "export-old"}
    dry = apply_retention(dry_run=True)
    assert {d.path for d in dry.deleted} == {str(aged[k]) for k in expect_gone}
    assert all(p.exists() for p in aged.values())  # nothing deleted by a dry run
    with caplog.at_level(logging.INFO, logger="dicomflow.processing.retention"):
        report = run_retention(cli_operator())
    assert {d.kind for d in report.deleted} == {"job", "datastore", "upload", "export"}
    assert report.freed_bytes == 2000 + 3000 + 500 + 700 and report.errors == []
    for key, path in aged.items():
        assert path.exists() == (key not in expect_gone), key
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for key in expect_gone:  # what is deleted is logged
        assert f"retention: deleted {key.split('-')[0]} {aged[key]}" in logged
    assert FolderIntake.objects.filter(folder_name="old").get().copy_path == ""
    assert not ZipUpload.objects.filter(file__contains="old-").exists()
    assert AuditEntry.objects.filter(action="retention", detail__startswith="4 item(s)").count() == 1
    assert apply_retention().deleted == []  # nothing left to do


@pytest.mark.django_db(transaction=True)
def test_zero_days_keeps_for_ever_and_only_administrators_may_run_it(aged, settings, django_user_model):
    settings.DICOMFLOW_RETAIN_JOB_DAYS = settings.DICOMFLOW_RETAIN_DATASTORE_DAYS = 0
    settings.DICOMFLOW_RETAIN_UPLOAD_DAYS = settings.DICOMFLOW_RETAIN_EXPORT_DAYS = 0
    assert apply_retention().deleted == [] and aged["job-old"].exists()
    clerk = django_user_model.objects.create_user("clerk", password="x-Long-Passw0rd")
    with pytest.raises(PermissionDeniedError):
        run_retention(clerk)
    assert AuditEntry.objects.filter(action="retention", outcome="denied").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_copy_outside_its_root_is_never_deleted(settings, tmp_path):
    settings.DICOMFLOW_RETAIN_DATASTORE_DAYS = 1
    settings.DICOMFLOW_RETAIN_JOB_DAYS = settings.DICOMFLOW_RETAIN_UPLOAD_DAYS = 0
    settings.DICOMFLOW_RETAIN_EXPORT_DAYS = 0
    outside = _folder(tmp_path / "precious")
    watched = WatchedFolder.objects.create(name="evil", path=str(tmp_path / "w"))
    FolderIntake.objects.create(watched_folder=watched, folder_name="x", source_path=str(outside),
                                copy_path=str(outside), status=Status.FINISHED,
                                finished_at=timezone.now() - timedelta(days=5))
    report = apply_retention()
    assert outside.exists() and report.deleted == []
    assert "outside" in report.errors[0]["reason"]


# --- the disk cap ------------------------------------------------------------------------------------
def test_capacity_counts_across_forked_workers():
    import multiprocessing

    cap = StoreCapacity("/", max_bytes=10_000, used_bytes=0)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4, initializer=_inherit, initargs=(cap,)) as pool:  # as the import's workers get it
        admitted = pool.map(_admit, [1000] * 40)
    assert admitted.count(None) == 10 and cap.used_bytes == 10_000 and cap.refused == 30


_cap = None


def _inherit(cap):
    global _cap
    _cap = cap


def _admit(size):
    return _cap.refusal(size)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_the_cap_refuses_new_files_with_a_reason_and_raises_the_alarm(settings, tmp_path, workers):
    info = write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=10, rows=16, cols=16, seed=f"cap{workers}")
    sizes = sorted(p.stat().st_size for p in Path(tmp_path / "ct").rglob("*.dcm"))
    from dicomflow.intake.diskcap import store_used_bytes

    settings.DICOMFLOW_STORE_MAX_BYTES = store_used_bytes() + sum(sizes[:4]) + sizes[4] // 2  # room for four
    settings.DICOMFLOW_STORE_MIN_FREE_BYTES = 0
    settings.DICOMFLOW_ADMIN_EMAILS = ["ops@example.org"]
    report = import_paths([tmp_path / "ct"], workers=workers)
    assert report.files_seen == 10 and report.instances_new == 4
    assert len(report.ignored) == 6
    assert all(i["reason"].startswith("refused: the store holds") and "DICOMFLOW_STORE_MAX_BYTES" in i["reason"]
               for i in report.ignored)
    [alarm] = mail.outbox
    assert alarm.to == ["ops@example.org"] and "store full: 6 file(s) refused" in alarm.subject
    assert PATIENT.patient_id not in alarm.body and "Ahorn" not in alarm.body
    # a duplicate takes no room: importing the stored files again is not refused
    again = import_paths([tmp_path / "ct"], workers=1)
    assert again.instances_duplicate == 4 and len(again.ignored) == 6
    assert info.series_uid


@pytest.mark.django_db(transaction=True)
def test_the_free_space_reserve_refuses_before_the_disk_fills(settings, tmp_path):
    write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=3, rows=16, cols=16, seed="reserve")
    settings.DICOMFLOW_STORE_MAX_BYTES = 0
    settings.DICOMFLOW_STORE_MIN_FREE_BYTES = 1 << 60  # more than any disk has
    report = import_paths([tmp_path / "ct"], workers=1)
    assert report.instances_new == 0 and len(report.ignored) == 3
    assert "DICOMFLOW_STORE_MIN_FREE_BYTES" in report.ignored[0]["reason"]


# --- the command line ---------------------------------------------------------------------------------
def _cli(home: Path, *args: str, env: dict | None = None) -> tuple[int, dict]:
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environ.update({"DICOMFLOW_HOME": str(home), **(env or {})})
    done = subprocess.run([DICOMFLOW, *args, "--json"], env=environ, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout)


def test_cli_import_with_a_cap_and_retention_run(tmp_path):
    home = tmp_path / "home"
    write_image_series(tmp_path / "ct", patient=PATIENT, n_slices=6, rows=16, cols=16, seed="cli-cap")
    size = max(p.stat().st_size for p in (tmp_path / "ct").rglob("*.dcm"))
    code, doc = _cli(home, "import", str(tmp_path / "ct"), env={"DICOMFLOW_STORE_MAX_BYTES": str(size * 2 + 10)})
    assert code == 0 and doc["files_seen"] == 6 and doc["instances_new"] == 2
    assert [i["reason"][:24] for i in doc["ignored"]] == ["refused: the store holds"] * 4
    scratch = _folder(home / "work" / "identified-cli", 1234)
    past = time.time() - 30 * 86400
    os.utime(scratch / "a.bin", (past, past))
    os.utime(scratch, (past, past))
    code, dry = _cli(home, "retention", "run", "--dry-run")
    assert code == 0 and dry["dry_run"] is True and scratch.exists()
    assert [(d["kind"], d["bytes"]) for d in dry["deleted"]] == [("export", 1234)]
    code, done = _cli(home, "retention", "run")
    assert code == 0 and done["freed_bytes"] == 1234 and not scratch.exists()
    assert set(done["policy"]) == {"datastore", "job", "upload", "export"}
