"""REST API writes of processing, per persona (X-Api-Key): send for processing, retry, cancel, QC,
override, results download, templates, rulesets, the rules' dry run and the audit log. Allowed
calls work; the rest answer 401/403/404 as problem details and write nothing; audited actions leave
exactly one audit entry. Jobs made through the API, the admin and the CLI run to Finished (real
Celery worker / the CLI in a subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from dicomflow.accounts.models import AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.core.rules import CT_BODY_LUNGS
from dicomflow.processing import services
from dicomflow.processing.models import Job, JobStage, JobStatus, LogEntry, Ruleset, SeriesState, Template
from fixtures_celery import wait_for
from fixtures_processing import world  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db
PERSONAS = ("alice", "bob", "charlie", "dora", "admin")


@pytest.fixture
def api(world):
    """An API client per persona, authenticated with the persona's own X-Api-Key; ``anon`` has none."""
    clients = {"anon": APIClient()}
    for name in PERSONAS:
        _, key = create_api_key(world[name], world[name])
        clients[name] = APIClient()
        clients[name].credentials(HTTP_X_API_KEY=key)
    return clients


def counts() -> tuple:
    return (Job.objects.count(), JobStage.objects.count(), LogEntry.objects.count(), AuditEntry.objects.count(),
            Template.objects.count(), Ruleset.objects.count(), SeriesState.objects.count(),
            list(Job.objects.order_by("pk").values_list("status", "state")))


def refused(client, method: str, url: str, status: int, data=None, audited: int = 0):
    """The call answers ``status`` as problem details and writes nothing (but ``audited`` entries)."""
    before, entries = counts(), AuditEntry.objects.count()
    response = getattr(client, method)(url, data, format="json") if data is not None else getattr(client, method)(url)
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["status"] == status
    assert AuditEntry.objects.count() == entries + audited
    after = counts()
    assert after[:3] + after[4:] == before[:3] + before[4:]
    return response


def body(series, project, **extra) -> dict:
    return {"series_uid": series.series_instance_uid, "project": project.key, **extra}


def test_post_jobs_per_persona(world, api, django_capture_on_commit_callbacks):
    a, b, series = world["a"], world["b"], world["series"]
    refused(api["anon"], "post", "/api/jobs/", 401, body(series["copy"], a))
    refused(api["charlie"], "post", "/api/jobs/", 404, body(series["copy"], a))
    refused(api["bob"], "post", "/api/jobs/", 404, body(series["copy"], a))
    refused(api["bob"], "post", "/api/jobs/", 403, body(series["copy"], b))
    refused(api["alice"], "post", "/api/jobs/", 404, body(series["ct"], a))  # no clinical pool for her
    refused(api["alice"], "post", "/api/jobs/", 400, {"project": a.key})  # neither series nor study
    refused(api["alice"], "post", "/api/jobs/", 400, body(series["copy"], a, template="nope"))
    refused(api["admin"], "post", "/api/jobs/", 400, body(series["mr"], a))  # the rules chose nothing

    with django_capture_on_commit_callbacks() as enqueued:
        response = api["alice"].post("/api/jobs/", body(series["copy"], a), format="json")
    assert response.status_code == 201, response.content
    job = response.json()
    assert (job["status"], job["template"], job["project_key"], job["series_instance_uid"]) == (
        "pending", CT_BODY_LUNGS, a.key, series["copy"].series_instance_uid)
    assert [s["name"] for s in job["stages"]][2] == "checking" and len(enqueued) == 1
    assert Job.objects.get(pk=job["id"]).created_by == world["alice"]

    study = api["admin"].post("/api/jobs/", {"study_uid": series["ct"].study.study_instance_uid,
                                             "project": a.key, "template": CT_BODY_LUNGS}, format="json")
    assert study.status_code == 201 and [j["series_instance_uid"] for j in study.json()] == [
        series["ct"].series_instance_uid]

    # reads: members of A see A's jobs; others get an empty list and 404
    assert {j["id"] for j in api["dora"].get("/api/jobs/").json()["results"]} == {job["id"], study.json()[0]["id"]}
    assert api["bob"].get("/api/jobs/").json()["results"] == []
    assert api["bob"].get(f"/api/jobs/{job['id']}/").status_code == 404
    assert api["alice"].get(f"/api/jobs/{job['id']}/").json()["status"] == "pending"


def _waiting_qc(world) -> Job:
    [job] = services.send_for_processing(world["admin"], project_key="proc-a", require_qc=True, inline=True,
                                         series_uids=[world["series"]["copy"].series_instance_uid])
    assert job.status == JobStatus.WAITING, job.error
    return job


def test_job_actions_per_persona(world, api):
    job = _waiting_qc(world)
    url = f"/api/jobs/{job.pk}"
    actions = {"retry": None, "cancel": None, "approve": None, "reject": {"reason": "no"},
               "override": {"code": "COMPLETENESS_MISSING_SLICES", "reason": "why"}}
    for name, data in actions.items():
        refused(api["anon"], "post", f"{url}/{name}/", 401, data if data is not None else {})
        for persona in ("bob", "charlie"):
            refused(api[persona], "post", f"{url}/{name}/", 404, data if data is not None else {})
    refused(api["alice"], "post", f"{url}/reject/", 400, {"reason": ""})
    refused(api["alice"], "post", f"{url}/retry/", 400, {})  # only failed jobs
    refused(api["alice"], "post", f"{url}/override/", 400, {"code": "NOPE", "reason": "why"})

    entries = AuditEntry.objects.count()
    rejected = api["alice"].post(f"{url}/reject/", {"reason": "lungs too small"}, format="json")
    assert rejected.status_code == 200 and rejected.json()["status"] == "failed"
    assert AuditEntry.objects.filter(action="qc_reject", username="alice", object=f"job #{job.pk}").count() == 1
    overridden = api["alice"].post(f"{url}/override/", {"code": "COMPLETENESS_MISSING_SLICES", "reason": "ok"},
                                   format="json")
    assert overridden.status_code == 200
    assert [o["code"] for o in overridden.json()["overrides"]] == ["COMPLETENESS_MISSING_SLICES"]
    retried = api["alice"].post(f"{url}/retry/", format="json")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert AuditEntry.objects.count() == entries + 2  # reject, override (a retry is not audited)

    second = _waiting_qc(world)
    approved = api["dora"].post(f"/api/jobs/{second.pk}/approve/", format="json")
    assert approved.status_code == 200
    assert {s["name"]: s["status"] for s in approved.json()["stages"]}["quality_control"] == "done"
    assert AuditEntry.objects.filter(action="qc_approve", username="dora").count() == 1
    cancelled = api["alice"].post(f"/api/jobs/{second.pk}/cancel/", format="json")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


def test_results_download_per_persona(world, api):
    [job] = services.send_for_processing(world["admin"], project_key="proc-a", inline=True,
                                         series_uids=[world["series"]["ct"].series_instance_uid])
    assert job.status == JobStatus.FINISHED, job.error
    url = f"/api/jobs/{job.pk}/results/"
    refused(api["anon"], "get", url, 401)
    refused(api["alice"], "get", url, 403, audited=1)  # manages A, may not see identities
    refused(api["bob"], "get", url, 404, audited=1)
    refused(api["charlie"], "get", url, 404, audited=1)
    assert list(AuditEntry.objects.filter(action="result_download").values_list("outcome", flat=True)) == [
        "denied"] * 3
    response = api["dora"].get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        assert [n[:3] for n in zf.namelist()] == ["RS."]
    assert AuditEntry.objects.filter(action="result_download", outcome="ok", username="dora").count() == 1


def test_templates_and_rulesets_per_persona(world, api):
    definition = Template.objects.get(name=CT_BODY_LUNGS).definition
    assert CT_BODY_LUNGS in [t["name"] for t in api["bob"].get("/api/templates/").json()["results"]]
    shown = api["charlie"].get(f"/api/templates/{CT_BODY_LUNGS}/").json()
    assert shown["builtin"] is True and "blocking_findings" in shown["definition"]
    refused(api["anon"], "get", "/api/templates/", 401)
    new = {"name": "api-made", "definition": definition}
    for persona in ("alice", "bob", "charlie", "dora"):
        refused(api[persona], "post", "/api/templates/", 403, new)
        refused(api[persona], "patch", f"/api/templates/{CT_BODY_LUNGS}/", 403, {"definition": definition})
        refused(api[persona], "delete", f"/api/templates/{CT_BODY_LUNGS}/", 403)
        refused(api[persona], "post", "/api/rulesets/", 403, {"name": "r", "definition": {}})
    refused(api["admin"], "post", "/api/templates/", 400, {"name": "bad", "definition": {"processor": ""}})
    made = api["admin"].post("/api/templates/", new, format="json")
    assert made.status_code == 201 and made.json()["name"] == "api-made"
    edited = api["admin"].patch("/api/templates/api-made/", {"definition": {**definition, "description": "mine"}},
                                format="json")
    assert edited.status_code == 200 and edited.json()["definition"]["description"] == "mine"
    rule = {"name": "api-rule", "definition": {"template": "api-made", "match": {
        "attribute": "Modality", "operator": "equals", "value": "XX"}}, "enabled": False}
    assert api["admin"].post("/api/rulesets/", rule, format="json").status_code == 201
    assert api["bob"].get("/api/rulesets/api-rule/").json()["enabled"] is False
    refused(api["admin"], "delete", "/api/templates/api-made/", 400)  # the ruleset names it
    assert api["admin"].delete("/api/rulesets/api-rule/").status_code == 204
    assert api["admin"].delete("/api/templates/api-made/").status_code == 204
    refused(api["admin"], "get", "/api/templates/api-made/", 404)
    services.send_for_processing(world["admin"], project_key="proc-a",
                                 series_uids=[world["series"]["ct"].series_instance_uid])
    refused(api["admin"], "delete", f"/api/templates/{CT_BODY_LUNGS}/", 400)  # used by a job


def test_rules_dry_run_per_persona(world, api):
    copy_uid, clinical_uid = (world["series"][k].series_instance_uid for k in ("copy", "ct"))
    refused(api["anon"], "post", "/api/rules/dry-run/", 401, {"series_uid": copy_uid})
    refused(api["alice"], "post", "/api/rules/dry-run/", 404, {"series_uid": clinical_uid})
    refused(api["bob"], "post", "/api/rules/dry-run/", 404, {"series_uid": copy_uid})
    refused(api["alice"], "post", "/api/rules/dry-run/", 400, {"series_uid": copy_uid, "rulesets": [{"match": 1}]})
    before = counts()
    result = api["alice"].post("/api/rules/dry-run/", {"series_uid": copy_uid}, format="json").json()
    assert (result["status"], result["template"]) == ("RULE_MATCHED", CT_BODY_LUNGS)
    preview = api["alice"].post("/api/rules/dry-run/", {"series_uid": copy_uid, "rulesets": [
        {"template": CT_BODY_LUNGS, "match": {"attribute": "Modality", "operator": "equals", "value": "MR"}}]},
        format="json").json()
    assert preview["status"] == "RULE_NOT_MATCHED"
    assert counts() == before


def test_audit_log_for_administrators_only(world, api):
    job = _waiting_qc(world)
    services.approve_qc(world["dora"], job.pk)
    refused(api["anon"], "get", "/api/audit/", 401)
    for persona in ("alice", "bob", "charlie", "dora"):
        refused(api[persona], "get", "/api/audit/", 403)
    entries = api["admin"].get("/api/audit/", {"action": "qc_approve"}).json()["results"]
    assert [{k: e[k] for k in ("user", "action", "project", "object", "outcome")} for e in entries] == [
        {"user": "dora", "action": "qc_approve", "project": "proc-a", "object": f"job #{job.pk}", "outcome": "ok"}]
    assert entries[0]["at"]
    assert api["admin"].get("/api/audit/", {"user": "alice", "action": "qc_approve"}).json()["results"] == []
    assert api["admin"].get("/api/audit/", {"project": "proc-b"}).json()["results"] == []


# --- jobs made through the API, the admin and the CLI run to Finished -------------------------------------------
def _finished(job_id: int, worker) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=(JobStatus.FINISHED, JobStatus.FAILED)).first(),
                    timeout=180, worker=worker, what=f"job {job_id} to end")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_jobs_from_the_api_and_the_admin_run_to_finished(world, api, client, celery_worker_process):
    series = world["series"]
    response = api["admin"].post("/api/jobs/", body(series["ct"], world["a"]), format="json")
    assert response.status_code == 201, response.content
    job = _finished(response.json()["id"], celery_worker_process)
    assert job.status == JobStatus.FINISHED, job.error
    assert api["admin"].get(f"/api/jobs/{job.pk}/").json()["status"] == "finished"
    assert api["dora"].get(f"/api/jobs/{job.pk}/results/").status_code == 200

    client.force_login(world["admin"])
    page = client.post(reverse("admin:processing_job_add"), {
        "series": series["copy"].pk, "project_key": "proc-a", "template": "", "input_path": "", "out_dir": ""})
    assert page.status_code == 302, page.content.decode()[:2000]
    added = Job.objects.exclude(pk=job.pk).get()
    assert added.created_by == world["admin"] and added.stages.count() == 9
    added = _finished(added.pk, celery_worker_process)
    assert added.status == JobStatus.FINISHED, added.error


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_job_sent_from_the_command_line_runs_to_finished(world, celery_worker_process):
    from django.conf import settings

    env = {**os.environ, "DATABASE_URL": celery_worker_process.database, "DICOMFLOW_HOME": str(settings.HOME)}
    done = subprocess.run([sys.executable, "-m", "dicomflow.cli", "jobs", "send", "--project", "proc-a", "--series",
                           world["series"]["ct"].series_instance_uid, "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [summary] = json.loads(done.stdout)["jobs"]
    assert summary["status"] == "finished"
    job = Job.objects.get(pk=summary["job"])
    assert job.status == JobStatus.FINISHED and job.created_by is None
    refused_cli = subprocess.run([sys.executable, "-m", "dicomflow.cli", "jobs", "reject", str(job.pk), "--reason",
                                  "x", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert refused_cli.returncode == 1 and "not waiting for quality control" in refused_cli.stderr
