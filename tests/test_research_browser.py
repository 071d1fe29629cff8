"""The research pages in a real browser (Debian's Chromium through Playwright) on a live server with a
real Celery worker: the RT-aware uploader into a subject's slot (also through an expired session), the
DICOM lookup with staging, and a user of another project who finds none of it. Every flow collects the
browser console and must end with no error in it. Screenshots (1280 px wide) go to docs/screenshots/ with
DICOMFLOW_UPDATE_SCREENSHOTS=1 (then commit them), else to the temporary folder (the tree stays clean).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.test import Client

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.catalog.analysis import analyse_studies
from dicomflow.catalog.models import Study
from dicomflow.intake.services import import_paths
from dicomflow.projects import services
from dicomflow.projects.models import Role, UploadSlot, UploadSlotLink
from dicomflow.testing.synth import PatientSpec, write_image_series, write_rt_study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
OP = cli_operator()
SHOTS = (Path(__file__).resolve().parents[1] / "docs" / "screenshots"
         if os.environ.get("DICOMFLOW_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "dicomflow-research")
WIDTH = 1280


@pytest.fixture
def page(browser_page):
    browser_page.set_viewport_size({"width": WIDTH, "height": 860})
    problems: list[str] = []
    browser_page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    browser_page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    browser_page.console_problems = problems
    return browser_page


def shot(page, name: str, full: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"research-{name}.png"), full_page=full)


def log_in(page, live_server, user) -> None:
    """A logged-in browser session for ``user`` (the session cookie of a test client's login)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])


@pytest.fixture
def trial(django_user_model, tmp_path):
    """Project TRIAL with an enrolled female subject whose Planning CT slot is empty; ursula uploads."""
    project = services.create_project("TRIAL", "Lung trial")
    ursula = django_user_model.objects.create_user("ursula", password="ursula long passphrase 3")
    bob = django_user_model.objects.create_user("bob", password="bob long passphrase 3")
    other = services.create_project("OTHER", "Another trial")
    services.add_member(OP, project, ursula, Role.UPLOADER)
    services.add_member(OP, other, bob, Role.DATA_MANAGER)
    subject = services.enrol_subject(OP, project, "TRIAL-007", expected_sex="F", expected_birth_year=1961)
    slot = services.add_slot(OP, services.add_event(OP, subject, "Baseline"), "Planning CT")
    folder = tmp_path / "tps_export"
    rt = write_rt_study(folder, PatientSpec("CLIN-4711", "Tester^Tom", "M", "19610505"), n_slices=6, rows=32,
                        cols=32, with_mr=True, seed="research-browser")
    (folder / "notes.txt").write_text("exported from the planning system for the trial\n" * 5)
    return {"project": project, "ursula": ursula, "bob": bob, "subject": subject, "slot": slot, "rt": rt,
            "folder": folder}


def _choose_rt_study_and_select_the_dose(page, rt) -> int:
    page.wait_for_function("() => document.getElementById('df-ignored').textContent === '1'")
    page.get_by_role("button", name="Ignored").click()
    assert "notes.txt" in page.inner_text("#df-ignored-table") and "not DICOM" in page.inner_text("#df-ignored-table")
    shot(page, "uploader-ignored", full=False)
    page.keyboard.press("Escape")
    assert page.locator("#df-studies tbody tr").count() == 2  # the RT study and the MR study
    page.locator("#df-studies tbody tr", has_text="RTDOSE").get_by_role("button", name=re.compile("^Choose study")).click()
    page.get_by_role("tab", name="RT").click()
    dose_uid = rt.dose_for(rt.approved_plan).series_uid
    page.locator(f'#df-rt-tree input[data-uid="{dose_uid}"]').check()
    selected = set(page.eval_on_selector_all("#df-rt-tree input:checked", "els => els.map(e => e.dataset.uid)"))
    assert selected == {dose_uid, rt.approved_plan.series_uid, rt.rtstruct.series_uid, rt.ct.series_uid}
    assert "APPROVED" in page.inner_text("#df-rt-tree")
    shot(page, "uploader-rt-tree")
    return len(rt.ct.paths) + 3  # CT slices + structure set + plan + dose


def _override_the_sex_conflict(page, project, subject) -> None:
    assert page.get_by_role("button", name="Upload").is_disabled()  # the conflict blocks it
    page.get_by_role("button", name="Issues").click()
    assert "sex" in page.inner_text("#df-issues") and "F" in page.inner_text("#df-issues")
    page.fill("#df-override-reason", "sex mis-entered in the planning system; checked with the ward")
    shot(page, "uploader-issues", full=False)
    page.get_by_role("button", name="Override").click()
    page.wait_for_selector("#df-issues-dialog", state="hidden")
    assert AuditEntry.objects.filter(action="override", project=project.key, object=f"subject #{subject.pk}").count() == 1


def _finish_and_see_the_slot(page, live_server, trial, n_files) -> None:
    for counter in ("df-analysed", "df-uploaded", "df-verified"):
        page.wait_for_function(f"() => document.getElementById('{counter}').textContent === '{n_files}'", timeout=120_000)
    page.wait_for_function("() => !document.getElementById('df-finish-button').disabled", timeout=180_000)
    shot(page, "uploader-verified")
    page.get_by_role("button", name="Finish").click()
    page.wait_for_selector("#df-done", state="visible")
    slot = UploadSlot.objects.get(pk=trial["slot"].pk)
    assert slot.study is not None and slot.study.project_id == trial["project"].pk
    assert UploadSlotLink.objects.filter(slot=slot).count() == 1
    page.click("#df-back-to-subjects")
    row = page.locator(f"#df-slot-{slot.pk}")
    assert slot.study.study_instance_uid in row.inner_text()
    assert "CLIN-4711" not in page.content() and "Tester" not in page.content()  # the copy is pseudonymized
    shot(page, "subjects")


def test_uploader_sends_the_dose_closure_into_the_slot(page, live_server, trial, celery_worker_process):
    log_in(page, live_server, trial["ursula"])
    page.goto(f"{live_server.url}/projects/TRIAL/subjects/")
    page.get_by_role("link", name="Upload into Baseline / Planning CT").click()
    page.wait_for_selector("#df-drop")
    assert page.input_value("#df-slot-select") == str(trial["slot"].pk)
    page.set_input_files("#df-folder", str(trial["folder"]))
    n_files = _choose_rt_study_and_select_the_dose(page, trial["rt"])
    page.get_by_role("tab", name="Series").click()
    page.locator('#df-series tr[data-modality="RTPLAN"]', has_text="Plan1").get_by_role("button", name="Details").click()
    details = page.inner_text("#df-details")
    assert "RTPlanLabel" in details and "Plan1" in details and "ApprovalStatus" in details
    shot(page, "uploader-series-details", full=False)
    page.keyboard.press("Escape")
    _override_the_sex_conflict(page, trial["project"], trial["subject"])
    page.get_by_role("button", name="Upload").click()
    _finish_and_see_the_slot(page, live_server, trial, n_files)
    page.goto(f"{live_server.url}/projects/TRIAL/upload/")
    assert page.console_problems == []


def test_upload_carries_on_after_the_session_expired(page, live_server, trial, celery_worker_process):
    log_in(page, live_server, trial["ursula"])
    page.goto(f"{live_server.url}/projects/TRIAL/upload/?slot={trial['slot'].pk}")
    page.set_input_files("#df-folder", str(trial["folder"]))
    n_files = _choose_rt_study_and_select_the_dose(page, trial["rt"])
    _override_the_sex_conflict(page, trial["project"], trial["subject"])
    chunks = []

    def expire_midway(route):
        chunks.append(route.request.url)
        if len(chunks) == 3:  # the session cookie disappears (as when the session expired)
            page.context.clear_cookies(name=settings.SESSION_COOKIE_NAME)
        route.continue_()

    page.route("**/api/uploads/*/files/*/", expire_midway)
    page.get_by_role("button", name="Upload").click()
    page.wait_for_selector("#df-reauth-dialog", state="visible", timeout=60_000)
    uploaded_before = int(page.inner_text("#df-uploaded"))
    assert 0 < uploaded_before < n_files
    page.fill("#df-reauth-password", "ursula long passphrase 3")
    shot(page, "uploader-session-expired", full=False)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("#df-reauth-dialog", state="hidden")
    _finish_and_see_the_slot(page, live_server, trial, n_files)
    # the requests answered 401 while logged out are expected; nothing else may be in the console
    unexpected = [p for p in page.console_problems if "status of 401" not in p]
    assert unexpected == []


def test_data_manager_looks_up_and_stages_and_outsider_finds_nothing(page, live_server, django_user_model, tmp_path,
                                                                     celery_worker_process):
    for i in range(12):
        write_image_series(tmp_path / f"p{i}", PatientSpec(f"WARD{i:03d}", f"Ward^Patient{i}", "F", "19500101"),
                           n_slices=2, rows=16, cols=16, seed=f"ward-{i}")
    rt = write_rt_study(tmp_path / "rt", PatientSpec("WARD777", "Ward^Rita", "F", "19480808"), n_slices=5, rows=32,
                        cols=32, with_mr=False, seed="ward-rt")
    report = import_paths([tmp_path], workers=1, analyse=False)
    analyse_studies(report.study_ids, workers=1)  # the RT edges the lookup's tree shows (a worker's job)
    project = services.create_project("LOOK", "Lookup trial")
    alice = django_user_model.objects.create_user("alice", password="alice long passphrase 3")
    alice.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    services.add_member(OP, project, alice, Role.DATA_MANAGER)
    log_in(page, live_server, alice)
    page.goto(f"{live_server.url}/projects/LOOK/lookup/")
    page.fill("#df-patient-search", "WARD")
    page.wait_for_selector("#df-suggestions li[role=option]")
    assert page.locator("#df-suggestions li[role=option]").count() == 10  # 13 match
    shot(page, "lookup-autocomplete", full=False)
    page.fill("#df-bulk", "ARD003, ARD777")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#df-patients")
    assert page.locator("tbody.df-patient").count() == 2
    page.get_by_role("button", name="Studies of WARD777").click()
    study = page.locator(f'.df-study[data-study="{rt.study_uid}"]')
    assert study.locator(".df-pseudonymized").inner_text() == "no"
    study.get_by_role("button", name="Edit").click()
    page.wait_for_selector("#df-edit-dialog[open]")
    page.get_by_role("tab", name="RT tree").click()
    page.locator(f'#df-edit-tree input[data-uid="{rt.ct.series_uid}"]').check()  # a parent selects its children
    picked = set(page.eval_on_selector_all("#df-edit-tree input:checked", "els => els.map(e => e.dataset.uid)"))
    assert {rt.ct.series_uid, rt.rtstruct.series_uid, rt.approved_plan.series_uid} <= picked
    assert len(picked) == len(rt.series_uids)
    shot(page, "lookup-edit-tree")
    page.get_by_role("button", name="Stage").click()
    page.wait_for_function("() => document.getElementById('df-v-verified').textContent === 'yes'", timeout=180_000)
    assert page.inner_text("#df-v-leak") == "0 findings"
    assert page.inner_text("#df-v-pseudonymized") == "yes" and study.locator(".df-pseudonymized").inner_text() == "yes"
    page.wait_for_timeout(400)  # the bar's width transition
    shot(page, "lookup-staged")
    assert Study.objects.filter(project=project).count() == 1
    assert page.console_problems == []

    # a user of another project finds none of it
    bob = django_user_model.objects.create_user("bob", password="bob long passphrase 3")
    services.add_member(OP, services.create_project("ELSE", "Elsewhere"), bob, Role.DATA_MANAGER)
    page.context.clear_cookies()
    log_in(page, live_server, bob)
    for path in ("lookup/", "subjects/", "upload/", "lookup/suggest.json?q=WARD"):
        response = page.goto(f"{live_server.url}/projects/LOOK/{path}")
        assert response.status == 404, path
    page.goto(f"{live_server.url}/projects/ELSE/lookup/?ids=WARD")
    assert page.locator("#df-no-patients").is_visible()
    assert page.eval_on_selector_all("#df-project-select option", "os => os.map(o => o.value)") == ["ELSE"]


def test_upload_error_shows_the_errors_and_retry_sends_only_what_is_missing(page, live_server, trial,
                                                                              celery_worker_process):
    log_in(page, live_server, trial["ursula"])
    page.goto(f"{live_server.url}/projects/TRIAL/upload/?slot={trial['slot'].pk}")
    page.set_input_files("#df-folder", str(trial["folder"]))
    n_files = _choose_rt_study_and_select_the_dose(page, trial["rt"])
    _override_the_sex_conflict(page, trial["project"], trial["subject"])
    sent: list[str] = []

    def refuse_one_file(route):  # the server refuses file 1 once (e.g. a proxy in the way)
        sent.append(route.request.url)
        if route.request.url.endswith("/files/1/") and sent.count(route.request.url) == 1:
            route.fulfill(status=400, content_type="application/json", body='{"detail": "refused by a proxy"}')
        else:
            route.continue_()

    page.route("**/api/uploads/*/files/*/", refuse_one_file)
    page.get_by_role("button", name="Upload").click()
    page.get_by_role("button", name="Retry").wait_for(state="visible", timeout=60_000)
    assert "refused by a proxy" in page.inner_text("#df-errors")
    assert page.locator('#df-steps li[data-step="analyse"]').get_attribute("class") == "done"
    assert page.locator('#df-steps li[data-step="upload"]').get_attribute("class") == "failed"
    with page.expect_download() as download:
        page.get_by_role("link", name="Download log").click()
    assert "refused by a proxy" in Path(download.value.path()).read_text()
    first_round = len(sent)
    page.get_by_role("button", name="Retry").click()
    _finish_and_see_the_slot(page, live_server, trial, n_files)
    assert len(sent) - first_round == 1  # only the missing file was sent again
    assert page.console_problems == [] or all("status of 400" in p for p in page.console_problems)


def test_files_dropped_on_the_drop_zone_are_read(page, live_server, trial):
    import base64

    dicom = base64.b64encode(trial["rt"].approved_plan.paths[0].read_bytes()).decode()
    log_in(page, live_server, trial["ursula"])
    page.goto(f"{live_server.url}/projects/TRIAL/upload/?slot={trial['slot'].pk}")
    transfer = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "plan.dcm"));
        dt.items.add(new File(["DICOMDIR is not this"], "DICOMDIR"));
        dt.items.add(new File(["x".repeat(300)], "readme.txt"));
        return dt;
    }""", dicom)
    page.dispatch_event("#df-drop", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => document.getElementById('df-read').textContent === '3'")
    assert page.inner_text("#df-ignored") == "2"
    reasons = page.inner_text("#df-ignored-table")
    assert "DICOMDIR" in reasons and "not DICOM" in reasons
    assert page.locator("#df-series tr.df-series-row").count() == 1  # one study: chosen at once
    assert page.console_problems == []
