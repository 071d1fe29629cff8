"""The processing desk in a real browser (Debian's Chromium through Playwright) on a live server
with a real Celery worker: the flow of issue 11's "Done when".

A non-staff data manager (alice, project A, clinical pool) logs in, filters the series for
processing by patient ID, picks a template, sends two series in one bulk action, follows one job
to Finished on its page — approving quality control once the contour picture has loaded and is
not blank — and downloads the results ZIP; a viewer of another project (bob) sees none of these
series; a ZIP uploaded in the web app is processed with "Process now"; a rule edited in the
builder changes the dry run's explanation. Every page answers below 500 and the console stays
free of errors. Screenshots of the pages are taken at 1366 px (see ``SHOTS``).
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from PIL import Image

from dicomflow.accounts.actors import cli_operator
from dicomflow.catalog.models import Series
from dicomflow.intake.models import ZipUpload
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import Job, Template
from dicomflow.projects import services as projects
from dicomflow.projects.models import Role
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The README's screenshots are retaken with DICOMFLOW_UPDATE_SCREENSHOTS=1 (then commit docs/screenshots);
# other runs write them to the temporary folder, so a test run leaves the working tree clean.
SHOTS = (Path(__file__).resolve().parent.parent / "docs" / "screenshots"
         if os.environ.get("DICOMFLOW_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "dicomflow-desk")
WIDTH = 1366


@pytest.fixture
def world(tmp_path, django_user_model):
    services.ensure_builtin_templates()
    cts = {}
    for pid, name in (("FLOW-1", "Flow^Fiona"), ("FLOW-2", "Flow^Fred"), ("ELSE-9", "Else^Emil")):
        cts[pid] = write_image_series(tmp_path / pid, PatientSpec(pid, name, "F", "19650505"), n_slices=12, rows=64,
                                      cols=64, seed=pid, series_description="Thorax planning CT")
    import_paths([tmp_path / pid for pid in cts], workers=1, analyse=False)
    services.evaluate_series(Series.objects.values_list("pk", flat=True))
    definition = {**Template.objects.get(name="ct-body-lungs").definition}
    definition["parameters"] = {**definition["parameters"], "quality_control": True}
    definition["description"] = "Body and lungs, reviewed by a person before export"
    admin = django_user_model.objects.create_superuser("admin", password="pw-admin-123")
    services.create_template(admin, name="ct-body-lungs-qc", definition=definition)
    a, b = projects.create_project("flow-a", "Lung study A"), projects.create_project("flow-b", "Project B")
    alice = django_user_model.objects.create_user("alice", password="pw-alice-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    projects.add_member(cli_operator(), a, alice, Role.DATA_MANAGER)
    projects.add_member(cli_operator(), b, bob, Role.VIEWER)
    alice.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    return {"cts": cts, "alice": alice, "bob": bob, "tmp": tmp_path}


class Watch:
    """Console errors, uncaught page errors and server errors seen by a page."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("response", lambda r: r.status >= 500 and self.problems.append(f"{r.status} {r.url}"))


def log_in(page, base: str, username: str, password: str) -> None:
    """The web app's login form (``/login/``), as every user logs in."""
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_load_state()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))  # the viewport: 1366 px wide


def test_data_manager_processes_two_series_and_approves_qc(browser_page, live_server, world, celery_worker_process):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})
    watch = Watch(page)
    log_in(page, base, "alice", "pw-alice-123")

    page.goto(f"{base}/processing/series/")
    page.get_by_label("Patient ID or name").fill("FLOW")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tr[data-uid]")
    assert rows.count() == 2 and "ELSE-9" not in page.inner_text("table.desk")
    uids = [world["cts"][p].series_uid for p in ("FLOW-1", "FLOW-2")]
    for uid in uids:
        row = page.locator(f'tr[data-uid="{uid}"]')
        row.locator("select").select_option("ct-body-lungs-qc")
        row.locator("input.df-pick").check()
    assert page.inner_text("#df-selected") == "2 selected"
    page.locator(f'tr[data-uid="{uids[0]}"]').get_by_role("link", name="Why?").click()  # the rules' reasons
    page.wait_for_selector("#df-why-dialog[open]")
    assert "Modality value 'CT' = 'CT'" in page.inner_text("#df-why-dialog")
    page.keyboard.press("Escape")
    shot(page, "series-for-processing")
    page.get_by_role("button", name="Send for processing").click()
    page.wait_for_selector("#df-message")
    assert "Sent 2 series for processing in project flow-a" in page.inner_text("#df-message")
    jobs = list(Job.objects.order_by("pk"))
    assert len(jobs) == 2 and {j.template.name for j in jobs} == {"ct-body-lungs-qc"}
    # the statuses change without a reload (polling)
    page.wait_for_function("""() => [...document.querySelectorAll('.df-status')]
        .every(b => b.dataset.status === 'processing')""", timeout=120_000)

    job = jobs[0]
    page.locator(f'tr[data-uid="{job.series.series_instance_uid}"] a.df-job').click()
    page.wait_for_selector("#df-qc-image", timeout=180_000)  # the page follows the job until QC waits
    page.wait_for_function("() => document.getElementById('df-qc-image').complete")
    assert page.evaluate("document.getElementById('df-qc-image').naturalWidth") > 0
    png = page.request.get(page.locator("#df-qc-image").evaluate("img => img.src")).body()
    assert len(set(Image.open(io.BytesIO(png)).convert("RGB").getdata())) > 10  # a picture, not a blank frame
    page.keyboard.press("ArrowRight")  # through the slices by key
    assert "2/" in page.inner_text("#df-qc-caption")
    page.wait_for_function("() => document.getElementById('df-qc-image').complete "
                           "&& document.getElementById('df-qc-image').naturalWidth > 0")
    shot(page, "job-quality-control")
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector('li[data-stage="finished"].st-done', timeout=120_000)
    assert page.inner_text("#df-job-status") == "Finished"
    shot(page, "job-finished")
    assert page.locator("a.df-result-series").count() == 1  # the result, catalogued, one click away

    with page.expect_download() as download:
        page.get_by_role("link", name="Download results").click()
    names = zipfile.ZipFile(download.value.path()).namelist()
    assert names and all(n.endswith(".dcm") for n in names)

    page.goto(f"{base}/jobs/")
    shot(page, "jobs")
    page.goto(f"{base}/processing/logs/?q=FLOW-1")
    assert "approved by alice" in page.inner_text("table.log")
    shot(page, "processing-logs")
    assert watch.problems == []


def test_viewer_of_another_project_sees_none_of_the_series(browser_page, live_server, world):
    page, base = browser_page, live_server.url
    watch = Watch(page)
    log_in(page, base, "bob", "pw-bob-123")
    page.goto(f"{base}/processing/series/")
    text = page.inner_text("main")
    assert "FLOW-1" not in text and "FLOW-2" not in text and "Flow^Fiona" not in text and "No series match" in text
    assert page.get_by_role("button", name="Send for processing").count() == 0
    assert page.get_by_role("link", name="ZIP uploads").count() == 0
    assert watch.problems == []


def test_zip_uploaded_in_the_web_app_is_processed_with_process_now(browser_page, live_server, world,
                                                                    celery_worker_process):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})
    watch = Watch(page)
    extra = write_image_series(world["tmp"] / "zip-src", PatientSpec("ZIP-7", "Zip^Zoe"), n_slices=6, rows=32,
                               cols=32, seed="zip-7")
    archive = world["tmp"] / "ward-export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in extra.paths:
            zf.write(p, f"CT/{p.name}")
    log_in(page, base, "alice", "pw-alice-123")
    page.goto(f"{base}/uploads/zip/")
    page.set_input_files("#df-zip-files", str(archive))
    page.get_by_role("button", name="Upload").click()
    upload = ZipUpload.objects.get()
    assert upload.status == "pending"
    shot(page, "zip-uploads")
    page.get_by_role("button", name=f"Process now #{upload.pk}").click()
    page.wait_for_selector("a.z-link:not([hidden])", timeout=120_000)
    shot(page, "zip-progress")
    page.locator("a.z-link").click()
    page.wait_for_selector("#df-zip-result")
    assert "6" in page.inner_text("#df-zip-result")
    assert Series.objects.filter(series_instance_uid=extra.series_uid).exists()
    assert watch.problems == []


def test_a_rule_edited_in_the_builder_changes_the_dry_run(browser_page, live_server, world):
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})
    watch = Watch(page)
    log_in(page, base, "alice", "pw-alice-123")
    page.goto(f"{base}/processing/rulesets/ct-images/")
    uid = world["cts"]["FLOW-1"].series_uid
    page.select_option("#df-series", uid)
    page.get_by_role("button", name="Dry run").click()
    explanation = page.inner_text("#df-dry-run-result")
    assert "RULE_MATCHED" in explanation and "Modality value 'CT' = 'CT'" in explanation
    first = page.locator("#df-builder .rule").first
    assert first.locator(".r-attr").input_value() == "Modality"
    first.locator(".r-value").fill("MR")
    page.get_by_role("button", name="Dry run").click()
    explanation = page.inner_text("#df-dry-run-result")
    assert "RULE_NOT_MATCHED" in explanation and "no value of Modality ('CT') = 'MR'" in explanation
    assert page.locator("#df-builder .rule").first.locator(".r-value").input_value() == "MR"  # the edit is kept
    page.locator("#df-dry-run-result").scroll_into_view_if_needed()
    shot(page, "rule-builder-dry-run")
    page.goto(f"{base}/processing/templates/ct-body-lungs-qc/")
    shot(page, "template-form")
    assert watch.problems == []


def test_admin_adds_and_pauses_a_watched_folder_and_sees_every_copy(browser_page, live_server, world, settings):
    from dicomflow.intake import watch as watched

    settings.DICOMFLOW_IMPORT_WORKERS = 1
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": WIDTH, "height": 900})
    problems = Watch(page)
    incoming = world["tmp"] / "tps-export"
    write_image_series(incoming / "20240315_thorax", PatientSpec("DS-1", "Store^Sam"), n_slices=4, rows=16, cols=16,
                       seed="ds-1")
    log_in(page, base, "admin", "pw-admin-123")
    page.goto(f"{base}/datastore/")
    page.get_by_label("Name", exact=True).fill("tps-export")
    page.get_by_label("Path", exact=True).fill(str(incoming))
    page.get_by_label("Quiet minutes").fill("0")
    page.get_by_role("button", name="Add watched folder").click()
    page.wait_for_selector("text=Watched folder 'tps-export' added.")
    source = watched.WatchedFolder.objects.get(name="tps-export")
    watched.scan_source(source)  # the beat's scans: seen, then quiet, copied; then the import
    [taken] = watched.scan_source(source)
    assert watched.import_intake(taken) is not None
    page.reload()
    assert "20240315_thorax" in page.inner_text("main") and "4 new" in page.inner_text("main")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_selector("text=Watched folder 'tps-export' paused.")
    assert not watched.WatchedFolder.objects.get(pk=source.pk).enabled
    shot(page, "datastore")
    assert problems.problems == []
