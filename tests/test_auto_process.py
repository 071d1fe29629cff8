"""The automatic path without a worker: templates that process a rule match by themselves (API,
roles, audit), the quiet time, one automatic job per series (a database constraint, also under
concurrency), series decided on the whole when they arrive in parts, and the series left for a
person: no match, several matches, a blocking check finding."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction
from rest_framework.test import APIClient

from dicomflow.accounts.models import AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus
from dicomflow.errors import InputError
from dicomflow.intake.services import import_paths
from dicomflow.processing import selectors, services, tasks
from dicomflow.processing.models import Job, LogEntry, Ruleset, SeriesState, Template
from dicomflow.testing.synth import PatientSpec, write_image_series
from dicomflow.projects.models import Project, ProjectMembership, Role
from fixtures_processing import CLINICAL, _make_copy

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, django_user_model):
    """A smaller persona world than fixtures_processing's (fast): projects A and B; alice data manager
    of A, bob viewer of B, admin; a clinical CT, a CT with a missing slice, an MR, A's copy of a CT."""
    services.ensure_builtin_templates()
    size = {"n_slices": 12, "rows": 16, "cols": 16}
    made = {name: write_image_series(tmp_path / name, PatientSpec(f"AUTO-{name}") if name == "copy" else CLINICAL,
                                     modality="MR" if name == "mr" else "CT", skip_slices=[5] if name == "gap" else (),
                                     seed=f"auto-{name}-{tmp_path.name}", **size)
            for name in ("ct", "gap", "mr", "copy")}
    import_paths([tmp_path / name for name in made], workers=1)
    a, b = Project.objects.create(key="proc-a", name="A"), Project.objects.create(key="proc-b", name="B")
    users = {name: django_user_model.objects.create_user(name) for name in ("alice", "bob")}
    users["admin"] = django_user_model.objects.create_superuser("admin", "admin@example.org", None)
    ProjectMembership.objects.create(project=a, user=users["alice"], role=Role.DATA_MANAGER)
    ProjectMembership.objects.create(project=b, user=users["bob"], role=Role.VIEWER)
    series = {name: Series.objects.get(series_instance_uid=info.series_uid) for name, info in made.items()}
    series["copy"] = _make_copy(series["copy"], a)
    services.evaluate_series([s.pk for s in series.values()])
    return {"a": a, "b": b, **users, "series": series}


def _automatic(name: str = CT_BODY_LUNGS, project: str = "proc-a") -> None:
    Template.objects.filter(name=name).update(auto_process=True, auto_project=project)


def _client(user) -> APIClient:
    _, key = create_api_key(user, user)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


# --- settings: API, roles, audit ---------------------------------------------------------------------------------
def test_patch_template_switches_the_automatic_path_with_roles_and_audit(world, settings):
    settings.DICOMFLOW_AUTO_PROCESS_PROJECT = ""
    alice, bob, admin = world["alice"], world["bob"], world["admin"]
    alice.user_permissions.add(Permission.objects.get(codename="change_template"))
    url = f"/api/templates/{CT_BODY_LUNGS}/"
    as_alice, as_admin = _client(alice), _client(admin)
    shown = _client(bob).get(url).json()
    assert (shown["auto_process"], shown["auto_project"]) == (False, "")

    # bob may not change templates at all
    refused = _client(bob).patch(url, {"auto_process": True, "auto_project": "proc-b"}, format="json")
    assert refused.status_code == 403
    # alice may change templates and manages A, but she is no member of B: the project does not exist for her
    entries = AuditEntry.objects.count()
    refused = as_alice.patch(url, {"auto_process": True, "auto_project": "proc-b"}, format="json")
    assert refused.status_code == 404 and refused["Content-Type"].startswith("application/problem+json")
    denied = AuditEntry.objects.get(pk__gt=0, action="auto_process", outcome="denied")
    assert AuditEntry.objects.count() == entries + 1 and denied.project == "proc-b"
    # bob is a viewer of B: a member without the Manage capability gets 403
    bob.user_permissions.add(Permission.objects.get(codename="change_template"))
    bob = type(bob).objects.get(pk=bob.pk)  # permissions are cached per user object
    assert _client(bob).patch(url, {"auto_process": True, "auto_project": "proc-b"}, format="json").status_code == 403
    assert Template.objects.get(name=CT_BODY_LUNGS).auto_process is False

    # on without any project (and no default): refused, saying what is missing
    missing = as_admin.patch(url, {"auto_process": True}, format="json")
    assert missing.status_code == 400 and "auto_project" in missing.json()["detail"]
    bad = as_admin.patch(url, {"auto_process": True, "auto_project": "../etc"}, format="json")
    assert bad.status_code == 400 and "project key" in bad.json()["detail"]

    done = as_alice.patch(url, {"auto_process": True, "auto_project": "proc-a"}, format="json")
    assert done.status_code == 200, done.content
    assert (done.json()["auto_process"], done.json()["auto_project"]) == (True, "proc-a")
    row = Template.objects.get(name=CT_BODY_LUNGS)
    assert (row.auto_process, row.auto_project) == (True, "proc-a")
    entry = AuditEntry.objects.filter(action="auto_process", outcome="ok").get()
    assert (entry.user, entry.project, entry.object) == (alice, "proc-a", f"template '{CT_BODY_LUNGS}'")
    assert "on" in entry.detail
    # an edit of something else writes no audit entry; switching off does
    assert as_alice.patch(url, {"definition": row.definition}, format="json").status_code == 200
    assert AuditEntry.objects.filter(action="auto_process", outcome="ok").count() == 1
    assert as_alice.patch(url, {"auto_process": False}, format="json").json()["auto_process"] is False
    assert AuditEntry.objects.filter(action="auto_process", outcome="ok").count() == 2

    # the operator's default project serves templates that name none
    settings.DICOMFLOW_AUTO_PROCESS_PROJECT = "proc-a"
    made = as_admin.post("/api/templates/", {"name": "auto-default", "definition": row.definition,
                                                   "auto_process": True}, format="json")
    assert made.status_code == 201, made.content
    assert services.automatic_project(Template.objects.get(name="auto-default")) == "proc-a"


# --- the quiet time, one job per series, the series left for a person ---------------------------------------------
def test_quiet_series_start_one_job_and_blocked_ones_wait_for_a_person(world):
    _automatic()
    ct, gap = world["series"]["ct"], world["series"]["gap"]
    assert SeriesState.objects.get(series=gap).status == SeriesStatus.RULE_MATCHED.value  # 11 slices, one missing

    started, wait = services.start_automatic_jobs(quiet_seconds=3600)  # just imported: not quiet yet
    assert started == [] and 3500 < wait <= 3600
    assert not Job.objects.exists()

    started, wait = services.start_automatic_jobs(quiet_seconds=0)
    assert wait is None
    [job] = started
    # the clinical CT only: the project copy is no input, the MR matched nothing, the gap is blocked
    assert (job.series_id, job.template.name, job.project_key, job.automatic, job.created_by) == (
        ct.pk, CT_BODY_LUNGS, "proc-a", True, None)
    assert job.stages.count() == 9
    gap_state = SeriesState.objects.get(series=gap)
    assert gap_state.status == SeriesStatus.CHECK_FAILED.value
    assert "COMPLETENESS_MISSING_SLICES" in gap_state.explanation["summary"]
    assert LogEntry.objects.filter(series=gap, message__contains="not started").exists()
    entry = AuditEntry.objects.get(action="auto_process")
    assert (entry.username, entry.project, entry.object) == ("system", "proc-a", f"job #{job.pk}")

    assert services.start_automatic_jobs(quiet_seconds=0) == ([], None)  # never twice
    assert Job.objects.count() == 1
    # the desk shows the blocked series with its status, for a person to decide
    desk = {s.pk: s.desk_status for s in selectors.series_for_processing(world["admin"])}
    assert desk[gap.pk] == "check_failed" and desk[world["series"]["mr"].pk] == "not_matched"


def test_the_database_refuses_a_second_automatic_job(world):
    ct = world["series"]["ct"]
    services.create_job(project_key="proc-a", series_id=ct.pk, template_name=CT_BODY_LUNGS, automatic=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        services.create_job(project_key="proc-b", series_id=ct.pk, template_name=CT_BODY_LUNGS, automatic=True)
    # a person may still send it again by hand
    services.create_job(project_key="proc-a", series_id=ct.pk, template_name=CT_BODY_LUNGS)
    assert Job.objects.filter(series=ct).count() == 2
    assert Job.objects.filter(series=ct, automatic=True).count() == 1


def test_a_person_sent_series_gets_no_automatic_job(world):
    _automatic()
    ct = world["series"]["ct"]
    services.send_for_processing(world["admin"], project_key="proc-a", series_uids=[ct.series_instance_uid])
    services.start_automatic_jobs(quiet_seconds=0)
    assert list(Job.objects.filter(series=ct).values_list("automatic", flat=True)) == [False]


def test_a_template_chosen_by_hand_waits_for_the_person(world):
    _automatic()
    ct = world["series"]["ct"]
    services.choose_template(ct.pk, CT_BODY_LUNGS, world["alice"])
    services.start_automatic_jobs(quiet_seconds=0)
    assert not Job.objects.filter(series=ct).exists()


def test_two_templates_matching_start_nothing_and_show_multiple_matches(world, client):
    _automatic()
    Template.objects.create(name="ct-twin", definition=Template.objects.get(name=CT_BODY_LUNGS).definition,
                            auto_process=True, auto_project="proc-a")
    Ruleset.objects.create(name="any-ct", order=5, definition={
        "template": "ct-twin", "match": {"attribute": "Modality", "operator": "equals", "value": "CT"}})
    ct = world["series"]["ct"]
    services.evaluate_series([ct.pk], override_manual=True)
    assert services.start_automatic_jobs(quiet_seconds=0)[0] == [] or not Job.objects.filter(series=ct).exists()
    assert not Job.objects.filter(series=ct).exists()
    assert SeriesState.objects.get(series=ct).status == SeriesStatus.MULTIPLE_RULES_MATCHED.value
    client.force_login(world["admin"])
    page = client.get("/processing/series/?status=multiple").content.decode()
    assert ct.series_instance_uid in page and "Multiple matches" in page


# --- series arriving in parts ---------------------------------------------------------------------------------------
def test_a_series_in_parts_is_decided_on_the_whole_and_started_once(tmp_path, settings):
    services.ensure_builtin_templates()
    settings.DICOMFLOW_AUTO_PROCESS_PROJECT = "PARTS"
    Template.objects.filter(name=CT_BODY_LUNGS).update(auto_process=True)
    info = write_image_series(tmp_path / "ct", PatientSpec("PARTS-1"), n_slices=24, rows=16, cols=16, seed="parts")
    import_paths(info.paths[:6], workers=1)  # a first part: 6 images, too few for the rule
    series = Series.objects.get(series_instance_uid=info.series_uid)
    tasks.evaluate_imported([series.pk], quiet_seconds=0)
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RULE_NOT_MATCHED.value
    assert services.series_to_evaluate([series.pk]) == []  # decided, nothing new since
    assert not Job.objects.exists()

    import_paths(info.paths[6:18], workers=1)  # more arrives: decided again, on 18 images
    assert services.series_to_evaluate([series.pk]) == [series.pk]
    tasks.evaluate_imported([series.pk], quiet_seconds=3600)  # matched, but still arriving: no job yet
    assert SeriesState.objects.get(series=series).status == SeriesStatus.RULE_MATCHED.value
    assert not Job.objects.exists()

    import_paths(info.paths[18:], workers=1)  # the rest, after the decision: decided again when quiet
    evaluated = SeriesState.objects.get(series=series).evaluated_at
    [job] = services.start_automatic_jobs([series.pk], quiet_seconds=0)[0]
    assert SeriesState.objects.get(series=series).evaluated_at > evaluated
    assert (job.series_id, job.project_key, job.automatic) == (series.pk, "PARTS", True)
    import_paths(info.paths, workers=1)  # the same series again: duplicates only
    tasks.evaluate_imported([series.pk], quiet_seconds=0)
    assert Job.objects.count() == 1


def test_the_import_hook_sends_the_touched_series_and_the_quiet_time(tmp_path, settings, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    sent = []
    monkeypatch.setattr(tasks.evaluate_imported, "apply_async", lambda kwargs, **options: sent.append(kwargs))
    settings.DICOMFLOW_AUTO_PROCESS_QUIET_SECONDS = 7.5
    info = write_image_series(tmp_path / "ct", PatientSpec("HOOK-1"), n_slices=3, rows=8, cols=8, seed="hook")
    with django_capture_on_commit_callbacks(execute=True):
        import_paths([tmp_path / "ct"], workers=1)
    series = Series.objects.get(series_instance_uid=info.series_uid)
    assert sent == [{"series_ids": [series.pk], "quiet_seconds": 7.5}]
    with django_capture_on_commit_callbacks(execute=True):
        import_paths([tmp_path / "ct"], workers=1)  # nothing new: nothing to evaluate
    assert len(sent) == 1


# --- concurrency: two workers starting the same series at once ------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_start_one_job(world):
    _automatic()
    ct = world["series"]["ct"]
    barrier, outcomes = threading.Barrier(2), []

    def start():
        try:
            barrier.wait(10)
            outcomes.append(services.start_automatic_jobs([ct.pk], quiet_seconds=0)[0])
        except Exception as exc:  # noqa: BLE001 - reported below
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert sorted(len(o) for o in outcomes) == [0, 1]
    assert Job.objects.filter(series=ct).count() == 1


def test_automatic_processing_needs_a_project(world, settings):
    settings.DICOMFLOW_AUTO_PROCESS_PROJECT = ""
    with pytest.raises(InputError, match="research project"):
        services.update_template(world["admin"], CT_BODY_LUNGS, auto_process=True)
    # a template switched on whose project went away later (the default emptied): the series waits
    Template.objects.filter(name=CT_BODY_LUNGS).update(auto_process=True, auto_project="")
    assert services.start_automatic_jobs(quiet_seconds=0) == ([], None)
    assert not Job.objects.exists()
    assert LogEntry.objects.filter(message__contains="names no project").exists()


# --- the desk pages ---------------------------------------------------------------------------------------------------
def test_desk_template_form_switches_automatic_processing_and_lists_show_it(world):
    from django.test import Client

    admin, alice = Client(), Client()
    admin.force_login(world["admin"])
    world["alice"].user_permissions.add(Permission.objects.get(codename="change_template"))
    alice.force_login(world["alice"])
    url = f"/processing/templates/{CT_BODY_LUNGS}/"
    page = admin.get(url).content.decode()
    assert 'name="auto_process"' in page and "Automatic processing" in page
    form = {"name": CT_BODY_LUNGS, "processor": "builtin.ct_body_lungs", "modalities": "CT", "min_images": "10",
            "roi-key": ["body"], "roi-name": ["Body"], "roi-color": ["#00c800"], "roi-type": ["EXTERNAL"],
            "roi-label": ["1"], "blocking_findings": ["COMPLETENESS_MISSING_SLICES"], "auto_process": "on",
            "auto_project": "proc-b"}
    # alice manages A only: naming B is refused, nothing changes
    assert alice.post(url, form).status_code == 404
    assert Template.objects.get(name=CT_BODY_LUNGS).auto_process is False
    assert alice.post(url, {**form, "auto_project": "proc-a"}).status_code == 302
    row = Template.objects.get(name=CT_BODY_LUNGS)
    assert (row.auto_process, row.auto_project) == (True, "proc-a")
    assert AuditEntry.objects.filter(action="auto_process", outcome="ok", user=world["alice"]).count() == 1
    page = admin.get(url).content.decode()
    assert 'id="t-auto" name="auto_process" checked' in page and '<option value="proc-a" selected>' in page
    assert "proc-a" in admin.get("/processing/templates/").content.decode()
    rulesets = admin.get("/processing/rulesets/").content.decode()
    assert "automatic</span> project proc-a" in rulesets
    # switched off again from the form (the box unticked)
    assert admin.post(url, {k: v for k, v in form.items() if k != "auto_process"}).status_code == 302
    assert Template.objects.get(name=CT_BODY_LUNGS).auto_process is False
    assert "by a person" in admin.get("/processing/rulesets/").content.decode()
    # a series a blocking finding stopped shows "Check failed" in the series list
    Template.objects.filter(name=CT_BODY_LUNGS).update(auto_process=True, auto_project="proc-a")
    services.start_automatic_jobs(quiet_seconds=0)
    listing = admin.get("/processing/series/?status=check_failed").content.decode()
    assert world["series"]["gap"].series_instance_uid in listing and "Check failed" in listing
    assert world["series"]["ct"].series_instance_uid not in listing


def test_switching_on_processes_new_series_not_the_backlog(world, tmp_path):
    """Series catalogued before automatic processing was switched on are not swept into jobs."""
    ct = world["series"]["ct"]
    services.update_template(world["admin"], CT_BODY_LUNGS, auto_process=True, auto_project="proc-a")
    assert Template.objects.get(name=CT_BODY_LUNGS).auto_since is not None
    assert services.start_automatic_jobs(quiet_seconds=0) == ([], None)  # the CT came before: a person decides
    info = write_image_series(tmp_path / "new", PatientSpec("AUTO-NEW"), n_slices=12, rows=16, cols=16, seed="new")
    import_paths([tmp_path / "new"], workers=1)
    new = Series.objects.get(series_instance_uid=info.series_uid)
    tasks.evaluate_imported([new.pk], quiet_seconds=0)
    assert list(Job.objects.values_list("series_id", flat=True)) == [new.pk]
    assert not Job.objects.filter(series=ct).exists()
    services.update_template(world["admin"], CT_BODY_LUNGS, auto_process=False)
    assert Template.objects.get(name=CT_BODY_LUNGS).auto_since is None
