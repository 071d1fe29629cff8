"""A real browser (Debian's Chromium through Playwright) uploads a FOLDER through ``/upload/`` on a
live server; a real Celery worker imports it; then the user browses to the series page.

Screenshots land in /tmp (``dicomflow-web-*.png``) for a human look.
"""

from __future__ import annotations

import os

import pytest

from dicomflow.catalog.models import Instance, SeriesCheck
from dicomflow.intake.models import ImportRun, SourceKind, UploadSession
from dicomflow.testing.synth import PatientSpec, write_image_series, write_rt_study
from fixtures_celery import wait_for

SHOTS = "/tmp"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(browser_page):
    return browser_page


def shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(SHOTS, f"dicomflow-web-{name}.png"), full_page=True)


def test_folder_upload_result_and_series_page(page, live_server, admin_user, celery_worker_process, tmp_path):
    folder = tmp_path / "ward_export"
    rt = write_rt_study(folder, PatientSpec("BRW-1", "Browser^Bea", "F", "19620303"), n_slices=8, rows=48,
                        cols=48, with_mr=False, seed="browser")
    (folder / "README.txt").write_text("exported by the TPS")
    n_dicom = len(rt.paths)

    page.goto(f"{live_server.url}/upload/")
    page.fill("#id_username", "admin")  # the login page, then back to /upload/
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#df-folder")
    page.set_input_files("#df-folder", str(folder))
    assert page.inner_text("#df-selection").startswith(f"{n_dicom + 1} files")
    shot(page, "upload-chosen")

    # the network fails twice: a chunk that never reaches the server, and one whose answer is lost
    puts, failed = [], []

    def flaky(route):
        puts.append(route.request.url)
        if len(puts) == 2:
            failed.append("not sent")
            route.abort("connectionreset")
        elif len(puts) == 4:
            route.fetch()  # the server stores the chunk...
            failed.append("answer lost")
            route.abort("connectionreset")  # ...but the browser never hears back
        else:
            route.continue_()

    page.route("**/api/uploads/*/files/*/", flaky)
    page.click("#df-start")
    page.wait_for_selector("#df-result", state="visible", timeout=90_000)
    assert page.is_hidden("#df-error")
    assert page.inner_text("#df-r-files") == str(n_dicom + 1)
    assert page.inner_text("#df-r-new") == str(n_dicom)
    assert page.inner_text("#df-r-ignored") == "1"
    assert page.inner_text("#df-r-series") == str(len(set(rt.series_uids)))
    assert page.inner_text("#df-percent") == "100"
    assert failed == ["not sent", "answer lost"] and len(puts) >= n_dicom + 1 + 1  # one chunk re-sent
    problems = page.inner_text("#df-r-problem-table")
    assert "ward_export/README.txt" in problems and "ignored" in problems
    shot(page, "upload-result")

    session = UploadSession.objects.get(owner=admin_user)
    assert session.status == "finished" and session.file_count == n_dicom + 1
    assert all(f.sha256_declared and f.complete for f in session.upload_files.all())  # verified end to end
    assert session.received_size == session.total_size == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert ImportRun.objects.get(pk=session.import_run_id).source_kind == SourceKind.BROWSER_UPLOAD

    page.click(f'a.df-series-link[href="/series/{rt.ct.series_uid}/"]')
    page.wait_for_selector("#df-geometry")
    assert page.inner_text("#df-matrix") == "48 × 48"
    assert page.inner_text("#df-slices") == str(len(rt.ct.paths))
    assert page.locator("#df-instances tbody tr").count() == len(rt.ct.paths)
    shot(page, "series")

    wait_for(lambda: SeriesCheck.objects.filter(series__series_instance_uid=rt.ct.series_uid).exists(),
             timeout=60, worker=celery_worker_process, what="the study's analysis")
    page.click(".crumbs a >> nth=2")  # breadcrumb to the study
    page.wait_for_selector("#df-rt-tree")
    tree = page.inner_text("#df-rt-tree")
    assert "APPROVED" in tree and "RTDOSE" in tree
    shot(page, "study")

    page.goto(f"{live_server.url}/series/{rt.rtstruct.series_uid}/")
    assert all(name in page.content() for name in rt.rtstruct.roi_names)
    shot(page, "rtstruct")
    page.goto(f"{live_server.url}/imports/{session.import_run_id}/")
    assert page.inner_text("#df-new") == str(n_dicom) and "ward_export/README.txt" in page.content()
    shot(page, "import")

    page.goto(f"{live_server.url}/")
    assert page.inner_text("#df-count-instances") == str(n_dicom)
    shot(page, "home")
    page.goto(f"{live_server.url}/patients/?q=BRW")
    assert "Browser^Bea" in page.inner_text("#df-patients")
    shot(page, "patients")


def test_folder_upload_resumes_after_the_page_was_closed(page, live_server, admin_user, celery_worker_process,
                                                         tmp_path):
    folder = tmp_path / "scanner"
    series = write_image_series(folder / "CT", PatientSpec("BRW-2", "Browser^Ben"), n_slices=12, rows=32, cols=32,
                                seed="browser-resume")
    page.goto(f"{live_server.url}/admin/login/?next=/upload/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#df-folder")

    puts = []

    def network_dies_after_five(route):
        puts.append(route.request.url)
        route.continue_() if len(puts) <= 5 else route.abort("internetdisconnected")

    page.route("**/api/uploads/*/files/*/", network_dies_after_five)
    page.set_input_files("#df-folder", str(folder))
    page.click("#df-start")
    for _ in range(300):  # route handlers run while Playwright waits, not while Python sleeps
        if len(puts) > 5:
            break
        page.wait_for_timeout(100)
    assert len(puts) > 5
    page.unroute("**/api/uploads/*/files/*/")
    page.reload()  # the tab is closed mid-upload: its JavaScript state is gone

    session = UploadSession.objects.get(owner=admin_user)
    done_before = session.upload_files.filter(complete=True).count()
    assert session.status == "waiting" and 0 < done_before < 12

    resent = []
    page.route("**/api/uploads/*/files/*/", lambda route: (resent.append(route.request.url), route.continue_()))
    page.set_input_files("#df-folder", str(folder))  # the same folder again
    page.click("#df-start")
    page.wait_for_selector("#df-result", state="visible", timeout=90_000)
    assert page.get_attribute("#df-upload", "data-session") == str(session.pk)  # resumed, not started anew
    assert UploadSession.objects.filter(owner=admin_user).count() == 1
    assert len(resent) == 12 - done_before  # only the files the server did not have
    assert page.inner_text("#df-r-new") == "12" and page.inner_text("#df-r-ignored") == "0"
    assert sorted(series.sop_instance_uids) == sorted(
        Instance.objects.filter(series__series_instance_uid=series.series_uid).values_list("sop_instance_uid", flat=True))
    shot(page, "upload-resumed")
