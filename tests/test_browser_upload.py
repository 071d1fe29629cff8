"""A real browser (Debian's Chromium through Playwright) uploads a ZIP in the admin of a live server
and a real Celery worker imports it: log in, upload, Process now, watch progress, open the result.

Screenshots land in /tmp (``dicomflow-upload-*.png``) for a human look.
"""

from __future__ import annotations

import os

import pytest

from dicomflow.testing.synth import write_multi_patient_zip

SHOTS = "/tmp"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_process_and_watch_progress_in_the_browser(
    browser_page, live_server, admin_user, celery_worker_process, tmp_path
):
    from dicomflow.intake.models import UploadStatus, ZipUpload

    info = write_multi_patient_zip(tmp_path / "ward_export.zip", n_patients=3, n_slices=6, rows=32, cols=32)
    page = browser_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")

    page.goto(f"{live_server.url}/admin/intake/zipupload/add/")
    page.set_input_files("input[name=file]", str(info.path))
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")
    assert "Process now" in page.inner_text("ul.messagelist")
    row = page.locator("#result_list tbody tr", has_text="ward_export.zip")
    assert "Pending" in row.inner_text()
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-upload-list.png"), full_page=True)

    row.get_by_role("button", name="Process now").click()
    page.wait_for_url("**/intake/uploads/*/")
    page.wait_for_function(
        "() => document.getElementById('df-status').textContent.trim() === 'Completed'", timeout=90_000
    )
    assert page.inner_text("#df-percent") == "100"
    assert page.locator("#df-stages li.done").count() == 5
    assert not page.is_visible("#df-waiting") and not page.is_visible("#df-error-button")
    assert page.is_visible("#df-result-button")
    page.wait_for_timeout(600)  # let the bar's width transition finish before the screenshot
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-upload-progress.png"), full_page=True)

    page.click("#df-result-link")
    page.wait_for_selector("#df-new")
    assert page.inner_text("#df-new") == str(info.n_files)
    assert page.inner_text("#df-duplicate") == "0"
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-upload-result.png"), full_page=True)

    upload = ZipUpload.objects.get(original_name="ward_export.zip")
    assert upload.status == UploadStatus.FINISHED and upload.uploaded_by == admin_user
    page.goto(f"{live_server.url}/admin/intake/zipupload/")
    assert "Completed" in page.locator("#result_list tbody tr", has_text="ward_export.zip").inner_text()
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-upload-list-done.png"), full_page=True)

    # What the upload brought, as users see it first: the catalog's series with instance counts.
    page.goto(f"{live_server.url}/admin/catalog/series/?modality__exact=CT")
    counts = page.locator("#result_list td.field-n_instances").all_inner_texts()
    assert counts == ["6", "6", "6"]
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-catalog-series.png"), full_page=True)
    page.goto(f"{live_server.url}/admin/catalog/instance/")
    assert page.locator("#result_list tbody tr").count() == info.n_files
    page.screenshot(path=os.path.join(SHOTS, "dicomflow-catalog-instances.png"), full_page=False)
