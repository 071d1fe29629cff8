"""Watched datastore folders: only quiet folders are taken, each exactly once, then imported."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from dicomflow.catalog.models import Instance
from dicomflow.intake import watch
from dicomflow.intake.models import FolderIntake, FolderIntakeStatus, ImportRun, SourceKind, WatchedFolder
from dicomflow.testing.synth import PatientSpec, write_image_series
from fixtures_celery import wait_for

HOUR = 3600


def age(path: Path, seconds: float = HOUR) -> None:
    """Set every mtime below ``path`` (and its own) back by ``seconds``: a folder nobody touched since."""
    when = time.time() - seconds
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when))


def make_source(tmp_path: Path, name: str = "scanner", stable_minutes: float = 10.0) -> WatchedFolder:
    root = tmp_path / name
    root.mkdir()
    return WatchedFolder.objects.create(name=name, path=str(root), stable_minutes=stable_minutes)


def write_case(source: WatchedFolder, folder: str, n_slices: int = 4, patient_id: str = "WATCH01"):
    return write_image_series(
        Path(source.path) / folder / "CT", PatientSpec(patient_id=patient_id), "CT", n_slices, 16, 16
    )


def copies() -> list[Path]:
    root = settings.DATASTORE_DIR / "folders"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def intake_of(source: WatchedFolder, name: str) -> FolderIntake:
    return FolderIntake.objects.get(watched_folder=source, folder_name=name)


@pytest.fixture(autouse=True)
def clean_datastore():
    """Copies from other tests would make the "copied once" counts meaningless."""
    import shutil

    shutil.rmtree(settings.DATASTORE_DIR / "folders", ignore_errors=True)
    yield


@pytest.mark.django_db(transaction=True)
def test_changing_folder_waits_stable_one_is_copied_once_and_imported(tmp_path):
    source = make_source(tmp_path)
    info = write_case(source, "case1", n_slices=4)
    age(Path(source.path) / "case1")

    assert watch.scan_source(source) == []  # first sight: the signature is only recorded
    first = intake_of(source, "case1")
    assert first.status == FolderIntakeStatus.WAITING and first.signature.startswith("4:")

    # Something arrives between two scans: the folder is not quiet, it is not taken.
    extra = write_image_series(
        Path(source.path) / "case1" / "CT2", PatientSpec(patient_id="WATCH01"), "CT", 2, 16, 16
    )
    assert watch.scan_source(source) == []
    assert intake_of(source, "case1").status == FolderIntakeStatus.WAITING
    assert copies() == []

    # Unchanged since the previous scan but with fresh mtimes and 10 stable minutes: still waiting.
    assert watch.scan_source(source) == []
    assert copies() == []

    # Nothing touched for an hour (mtimes set back): recorded by one scan, taken by the next.
    age(Path(source.path) / "case1")
    assert watch.scan_source(source) == []
    taken = watch.scan_source(source)
    assert taken == [first.pk]
    row = intake_of(source, "case1")
    assert row.status == FolderIntakeStatus.PENDING and row.copied_at is not None
    assert row.files_copied == 6
    [copy] = copies()
    assert copy == Path(row.copy_path) and copy.name == "case1"
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.dcm")) == sorted(
        p.relative_to(Path(source.path) / "case1").as_posix() for p in (*info.paths, *extra.paths)
    )

    # Never taken twice, whatever happens to the source afterwards.
    os.utime(Path(source.path) / "case1", None)
    assert watch.scan_source(source) == [] and watch.scan_source(source) == []
    assert len(copies()) == 1

    report = watch.import_intake(row.pk)
    assert report is not None and report.instances_new == 6
    assert Instance.objects.count() == 6
    row.refresh_from_db()
    assert row.status == FolderIntakeStatus.FINISHED and row.import_run.source_kind == SourceKind.WATCHED_FOLDER
    assert watch.import_intake(row.pk) is None  # a second import request is a no-op
    assert ImportRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_tiny_stable_minutes_and_unique_copy_names(tmp_path):
    """With stable_minutes=0.01 (0.6 s) fresh folders are taken once quiet; equal names get -2."""
    a = make_source(tmp_path, "a", stable_minutes=0.01)
    b = make_source(tmp_path, "b", stable_minutes=0.01)
    write_case(a, "same", 2, "WATCH02")
    write_case(b, "same", 3, "WATCH03")
    (Path(a.path) / ".hidden-in-progress").mkdir()
    watch.scan_all()
    assert watch.scan_all() == []  # unchanged but not yet quiet for 0.6 s
    time.sleep(0.7)
    taken = watch.scan_all()
    assert len(taken) == 2
    assert [p.name for p in copies()] == ["same", "same-2"]
    assert not FolderIntake.objects.filter(folder_name__startswith=".").exists()


@pytest.mark.django_db(transaction=True)
def test_source_changing_during_copy_is_not_kept(tmp_path):
    source = make_source(tmp_path)
    write_case(source, "busy", 2, "WATCH04")
    age(Path(source.path) / "busy")
    watch.scan_source(source)
    row = intake_of(source, "busy")
    signature = watch.folder_signature(row.source_path)
    assert watch.claim(row.pk, signature.text)
    (Path(row.source_path) / "late.dcm").write_bytes(b"arrived while we copied")
    assert watch.copy_claimed(row, signature) is False
    row.refresh_from_db()
    assert row.status == FolderIntakeStatus.WAITING and row.claimed_by == ""
    assert copies() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_take_a_folder_once(tmp_path):
    source = make_source(tmp_path)
    write_case(source, "race", 2, "WATCH05")
    age(Path(source.path) / "race")
    watch.scan_source(source)
    row = intake_of(source, "race")
    barrier = threading.Barrier(6)
    results: list[bool] = []

    def contender():
        barrier.wait()
        try:
            results.append(watch.claim(row.pk, row.signature))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=contender) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def _scan_in_child(start, queue):
    connections.close_all()
    start.wait()
    try:
        queue.put(watch.scan_all())
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_scans_in_separate_processes_copy_once(tmp_path):
    source = make_source(tmp_path)
    for k in range(3):
        write_case(source, f"case{k}", 2, f"WATCH1{k}")
        age(Path(source.path) / f"case{k}")
    watch.scan_all()  # records the signatures; the racing scans below both find the folders quiet
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    start, queue = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_scan_in_child, args=(start, queue)) for _ in range(2)]
    for c in children:
        c.start()
    results = [queue.get(timeout=60) for _ in children]
    for c in children:
        c.join(30)
        assert c.exitcode == 0
    taken = sorted(results[0] + results[1])
    assert taken == sorted(FolderIntake.objects.values_list("pk", flat=True))  # each exactly once
    assert [p.name for p in copies()] == ["case0", "case1", "case2"]
    assert set(FolderIntake.objects.values_list("status", flat=True)) == {FolderIntakeStatus.PENDING}


@pytest.mark.django_db(transaction=True)
def test_periodic_task_on_real_worker_copies_and_imports(tmp_path, celery_worker_process):
    from dicomflow.intake.tasks import scan_watched_folders

    source = make_source(tmp_path)
    write_case(source, "nightly", 5, "WATCH20")
    age(Path(source.path) / "nightly")
    watch.scan_source(source)  # first sight (the beat would do this a minute earlier)
    scan_watched_folders.delay()
    scan_watched_folders.delay()  # a second, overlapping scan must not take it again
    row = wait_for(
        lambda: FolderIntake.objects.filter(status=FolderIntakeStatus.FINISHED).first(),
        timeout=60, worker=celery_worker_process, what="the watched folder to be imported",
    )
    assert row.folder_name == "nightly"
    assert Instance.objects.count() == 5
    assert ImportRun.objects.filter(source_kind=SourceKind.WATCHED_FOLDER).count() == 1
    from django_celery_results.models import TaskResult

    wait_for(  # both scans have run to the end (nothing of them is left to disturb later tests)
        lambda: TaskResult.objects.filter(task_name=scan_watched_folders.name, status="SUCCESS").count() == 2,
        timeout=30, worker=celery_worker_process, what="both scans to finish",
    )
    assert len(copies()) == 1 and FolderIntake.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_admin_retry_of_failed_or_stuck_folders(tmp_path, admin_client, celery_worker_process):
    from django.urls import reverse

    source = make_source(tmp_path)
    write_case(source, "copied", 2, "WATCH30")
    write_case(source, "lost", 2, "WATCH31")
    for name in ("copied", "lost"):
        age(Path(source.path) / name)
    watch.scan_source(source)
    assert len(watch.scan_source(source)) == 2
    done, lost = intake_of(source, "copied"), intake_of(source, "lost")
    FolderIntake.objects.filter(pk=done.pk).update(status=FolderIntakeStatus.FAILED, error="disk full")
    FolderIntake.objects.filter(pk=lost.pk).update(status=FolderIntakeStatus.RUNNING, copy_path="")
    assert watch.scan_source(source) == []  # neither is ever taken again by itself

    response = admin_client.post(
        reverse("admin:intake_folderintake_changelist"),
        {"action": "retry_import", "_selected_action": [done.pk, lost.pk]},
    )
    assert response.status_code == 302
    wait_for(lambda: intake_of(source, "copied").status == FolderIntakeStatus.FINISHED, timeout=60,
             worker=celery_worker_process, what="the retried import")
    assert Instance.objects.count() == 2
    again = intake_of(source, "lost")
    assert again.status == FolderIntakeStatus.WAITING and again.signature == ""
    watch.scan_source(source)
    assert watch.scan_source(source) == [lost.pk]


@pytest.mark.django_db(transaction=True)
def test_admin_add_validates_path_and_scan_now_runs_on_the_worker(tmp_path, admin_client, celery_worker_process):
    from django.urls import reverse

    add = reverse("admin:intake_watchedfolder_add")
    form = {"name": "ct-export", "enabled": "on", "stable_minutes": "0.01"}
    for bad, message in (
        ("relative/path", b"absolute path"),
        (str(tmp_path / "missing"), b"No folder exists"),
        (str(settings.DATASTORE_DIR), b"overlaps the dicomflow data folder"),
    ):
        response = admin_client.post(add, {**form, "path": bad})
        assert response.status_code == 200 and message in response.content
    assert not WatchedFolder.objects.exists()
    root = tmp_path / "export"
    root.mkdir()
    assert admin_client.post(add, {**form, "path": str(root)}).status_code == 302
    source = WatchedFolder.objects.get(name="ct-export")
    assert source.stable_minutes == 0.01

    write_case(source, "case", 3, "WATCH40")
    watch.scan_source(source)
    time.sleep(0.7)
    admin_client.post(
        reverse("admin:intake_watchedfolder_changelist"), {"action": "scan_now", "_selected_action": [source.pk]}
    )
    wait_for(lambda: intake_of(source, "case").status == FolderIntakeStatus.FINISHED, timeout=60,
             worker=celery_worker_process, what="the scan queued from the admin")
    assert Instance.objects.count() == 3
    page = admin_client.get(reverse("admin:intake_watchedfolder_change", args=[source.pk])).content.decode()
    assert "Imported" in page and "case" in page
