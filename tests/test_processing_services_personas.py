"""Processing services as people call them: who may send, retry, cancel, decide QC, override a
blocking finding, download results, edit templates and rulesets, dry-run the rules; what is
refused writes nothing; each audited action leaves exactly one audit entry. Real DB, jobs run in
this process through the same engine the worker runs."""

from __future__ import annotations

import zipfile

import pytest
from django.contrib.auth.models import Permission

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.core.rules import CT_BODY_LUNGS, DEFAULT_BLOCKING_FINDINGS
from dicomflow.errors import InputError, NotFoundError, PermissionDeniedError
from dicomflow.processing import selectors, services
from dicomflow.processing.models import Job, JobStage, JobStatus, LogEntry, Ruleset, SeriesState, Template
from fixtures_processing import world  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db


def counts() -> tuple:
    return (Job.objects.count(), JobStage.objects.count(), LogEntry.objects.count(), AuditEntry.objects.count(),
            Template.objects.count(), Ruleset.objects.count(), SeriesState.objects.count())


def refused(error, fn, *args, **kwargs):
    """``fn`` raises ``error`` and writes nothing."""
    before = counts()
    with pytest.raises(error):
        fn(*args, **kwargs)
    assert counts() == before


def audit(action: str) -> list[tuple]:
    return list(AuditEntry.objects.filter(action=action).order_by("id").values_list("username", "outcome", "project",
                                                                                    "object"))


def send(actor, project, series, **kwargs) -> list[Job]:
    return services.send_for_processing(actor, project_key=project.key, series_uids=[series.series_instance_uid],
                                        **kwargs)


def test_who_may_send_a_series_for_processing(world, django_capture_on_commit_callbacks):
    a, b, series = world["a"], world["b"], world["series"]
    with django_capture_on_commit_callbacks() as enqueued:
        [job] = send(world["alice"], a, series["copy"])  # a data manager sends her project's copy
    assert len(enqueued) == 1  # the first stage goes to the worker once the transaction commits
    assert (job.project_key, job.series_id, job.template.name, job.created_by) == (
        "proc-a", series["copy"].pk, CT_BODY_LUNGS, world["alice"])
    assert [s.name for s in job.stages.all()][:3] == ["uploading", "importing", "checking"]
    assert selectors.visible_jobs(world["alice"]).filter(pk=job.pk).exists()
    assert send(world["dora"], a, series["copy"])[0].created_by == world["dora"]  # re-identifiers manage too

    refused(NotFoundError, send, world["alice"], a, series["ct"])  # the clinical pool is not hers
    refused(NotFoundError, send, world["alice"], b, series["copy"])  # not a member of B
    refused(PermissionDeniedError, send, world["bob"], b, series["copy"])  # a viewer may not send
    refused(NotFoundError, send, world["bob"], a, series["copy"])
    refused(NotFoundError, send, world["charlie"], a, series["copy"])
    refused(NotFoundError, services.send_for_processing, world["alice"], project_key="proc-a",
            series_uids=["1.2.3.999"])
    refused(NotFoundError, services.send_for_processing, world["alice"], project_key="nope",
            series_uids=[series["copy"].series_instance_uid])
    with pytest.raises(NotFoundError) as missing:
        send(world["alice"], a, series["ct"])
    assert series["ct"].series_instance_uid not in str(missing.value)  # no clinical UID in messages

    # the admin sends clinical series; a series the rules matched nothing for needs a template
    [clinical] = send(world["admin"], a, series["ct"])
    assert clinical.template.name == CT_BODY_LUNGS
    with pytest.raises(InputError, match="the rules chose no template"):
        send(world["admin"], a, series["mr"])
    with pytest.raises(InputError, match="needs modality CT"):
        send(world["admin"], a, series["mr"], template_name=CT_BODY_LUNGS)
    jobs = services.send_for_processing(world["admin"], project_key="proc-a",
                                        study_uid=series["ct"].study.study_instance_uid)
    assert [j.series_id for j in jobs] == [series["ct"].pk]  # the study's MR is left out (its own study here)


def _finished(actor, project, series, **kwargs) -> Job:
    [job] = send(actor, project, series, inline=True, **kwargs)
    assert job.status == JobStatus.FINISHED, job.error
    return job


def test_retry_cancel_and_quality_control(world):
    a, alice = world["a"], world["alice"]
    [job] = send(alice, a, world["series"]["copy"], require_qc=True, inline=True)
    assert job.status == JobStatus.WAITING, job.error
    for name, error in (("bob", NotFoundError), ("charlie", NotFoundError)):
        refused(error, services.approve_qc, world[name], job.pk)
        refused(error, services.reject_qc, world[name], job.pk, "no")
        refused(error, services.cancel_job, world[name], job.pk)
    refused(InputError, services.reject_qc, alice, job.pk, "  ")  # a reason is required
    refused(InputError, services.retry_job, alice, job.pk)  # only failed jobs

    services.reject_qc(alice, job.pk, "lungs too small")
    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILED
    assert audit("qc_reject") == [("alice", "ok", "proc-a", f"job #{job.pk}")]
    job = services.retry_job(alice, job.pk, inline=True)
    assert job.status == JobStatus.WAITING  # made again, reviewed again
    job = services.approve_qc(world["dora"], job.pk, inline=True)
    assert job.status == JobStatus.FINISHED
    assert audit("qc_approve") == [("dora", "ok", "proc-a", f"job #{job.pk}")]
    refused(InputError, services.approve_qc, alice, job.pk)  # not waiting any more

    [pending] = send(alice, a, world["series"]["copy"])
    assert services.cancel_job(alice, pending.pk).status == JobStatus.CANCELLED


def test_blocking_findings_fail_checking_until_overridden(world):
    a, alice = world["a"], world["alice"]
    template = Template.objects.get(name=CT_BODY_LUNGS)
    assert template.core().blocking_findings == DEFAULT_BLOCKING_FINDINGS
    assert "COMPLETENESS_MISSING_SLICES" in template.definition["blocking_findings"]
    [job] = send(world["admin"], a, world["series"]["gap"], inline=True)
    assert job.status == JobStatus.FAILED and job.stage == "checking"
    assert "COMPLETENESS_MISSING_SLICES" in job.error and "override" in job.error

    refused(NotFoundError, services.override_blocking_finding, world["bob"], job.pk, "COMPLETENESS_MISSING_SLICES",
            "fine")
    refused(InputError, services.override_blocking_finding, alice, job.pk, "COMPLETENESS_MISSING_SLICES", "")
    refused(InputError, services.override_blocking_finding, alice, job.pk, "NOT_A_CODE", "why")
    job = services.override_blocking_finding(alice, job.pk, "COMPLETENESS_MISSING_SLICES", "gap is outside the lungs")
    assert [(o["code"], o["by"]) for o in job.state["overrides"]] == [("COMPLETENESS_MISSING_SLICES", "alice")]
    assert audit("override") == [("alice", "ok", "proc-a", f"job #{job.pk}")]
    job = services.retry_job(alice, job.pk, inline=True)
    assert job.status == JobStatus.FINISHED, job.error
    assert LogEntry.objects.filter(job=job, level="WARNING", message__contains="COMPLETENESS_MISSING_SLICES").exists()

    # a template that blocks on nothing records the finding as a warning only
    services.create_template(world["admin"], name="lenient",
                             definition={**template.definition, "blocking_findings": []})
    job = _finished(world["admin"], a, world["series"]["gap"], template_name="lenient")
    assert LogEntry.objects.filter(job=job, level="WARNING", stage="checking",
                                   message__contains="COMPLETENESS_MISSING_SLICES").exists()


def test_results_download_needs_sight_of_identities_and_is_audited(world, django_user_model):
    a = world["a"]
    job = _finished(world["admin"], a, world["series"]["ct"])
    path = services.download_results(world["dora"], job.pk)  # re-identifier of A
    with zipfile.ZipFile(path) as zf:
        assert [n[:3] for n in zf.namelist()] == ["RS."]
    assert audit("result_download") == [("dora", "ok", "proc-a", f"job #{job.pk}")]

    before = Job.objects.count()
    with pytest.raises(PermissionDeniedError):
        services.download_results(world["alice"], job.pk)  # manages A, may not see the clinical pool
    with pytest.raises(NotFoundError):
        services.download_results(world["bob"], job.pk)
    assert Job.objects.count() == before
    assert audit("result_download")[1:] == [("alice", "denied", "proc-a", f"job #{job.pk}"),
                                            ("bob", "denied", "proc-a", f"job #{job.pk}")]
    alice = world["alice"]
    alice.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    alice = django_user_model.objects.get(pk=alice.pk)
    assert services.download_results(alice, job.pk).exists()  # now she may
    assert services.download_results(world["admin"], job.pk).exists()
    assert AuditEntry.objects.filter(action="result_download").count() == 5


def test_templates_and_rulesets_need_the_model_permissions(world, django_user_model):
    alice = world["alice"]
    definition = {**Template.objects.get(name=CT_BODY_LUNGS).definition}
    refused(PermissionDeniedError, services.create_template, alice, name="mine", definition=definition)
    refused(PermissionDeniedError, services.update_template, alice, CT_BODY_LUNGS, definition=definition)
    refused(PermissionDeniedError, services.delete_ruleset, alice, "ct-images")
    for codename in ("add_template", "change_template", "delete_template", "add_ruleset"):
        alice.user_permissions.add(Permission.objects.get(codename=codename))
    alice = django_user_model.objects.get(pk=alice.pk)
    row = services.create_template(alice, name="mine", definition=definition)
    assert row.core().processor == definition["processor"]
    refused(InputError, services.create_template, alice, name="bad", definition={"processor": ""})
    refused(InputError, services.create_template, alice, name="mine", definition=definition)  # name taken
    refused(InputError, services.update_template, alice, "mine", definition={**definition, "blocking_findings": ["X"]})
    builtin = services.update_template(alice, CT_BODY_LUNGS, definition={**definition, "description": "edited"})
    assert builtin.builtin and builtin.definition["description"] == "edited"
    ruleset = services.create_ruleset(alice, name="mine-rule", definition={
        "template": "mine", "match": {"attribute": "Modality", "operator": "equals", "value": "XX"}})
    refused(InputError, services.delete_template, alice, "mine")  # a ruleset names it
    refused(PermissionDeniedError, services.delete_ruleset, alice, ruleset.name)
    services.delete_ruleset(world["admin"], ruleset.name)
    services.delete_template(alice, "mine")
    assert not Template.objects.filter(name="mine").exists()
    send(world["admin"], world["a"], world["series"]["ct"])
    refused(InputError, services.delete_template, alice, CT_BODY_LUNGS)  # used by a job


def test_rules_dry_run_explains_and_previews_without_writing(world):
    series = world["series"]
    before = counts()
    result = services.rules_dry_run(world["alice"], series["copy"].series_instance_uid)
    assert (result["status"], result["template"]) == ("RULE_MATCHED", CT_BODY_LUNGS)
    assert result["explanation"]["matched_rulesets"]
    preview = services.rules_dry_run(world["alice"], series["copy"].series_instance_uid, [
        {"template": CT_BODY_LUNGS, "match": {"attribute": "Modality", "operator": "equals", "value": "MR"}}])
    assert preview["status"] == "RULE_NOT_MATCHED" and preview["template"] is None
    assert counts() == before
    refused(NotFoundError, services.rules_dry_run, world["alice"], series["ct"].series_instance_uid)
    refused(NotFoundError, services.rules_dry_run, world["charlie"], series["copy"].series_instance_uid)
    refused(InputError, services.rules_dry_run, world["alice"], series["copy"].series_instance_uid,
            [{"match": {"attribute": "Modality", "operator": "bigger", "value": 1}, "template": "x"}])
    assert services.rules_dry_run(world["admin"], series["mr"].series_instance_uid)["status"] == "RULE_NOT_MATCHED"


def test_the_cli_operator_acts_everywhere_and_is_audited_by_login(world):
    operator = cli_operator()
    [job] = send(operator, world["a"], world["series"]["ct"], require_qc=True, inline=True)
    assert job.created_by is None and job.status == JobStatus.WAITING
    services.approve_qc(operator, job.pk, inline=True)
    [(user, outcome, project, obj)] = audit("qc_approve")
    assert user == f"cli:{operator.login}" and outcome == "ok"
    assert selectors.visible_jobs(operator).count() == Job.objects.count()


def test_folder_jobs_and_key_store_projects_need_the_right_people(world, tmp_path):
    folder = world["info"]["ct"].paths[0].parent
    refused(NotFoundError, services.process_folder, world["charlie"], project_key="proc-a", path=folder)
    refused(PermissionDeniedError, services.process_folder, world["bob"], project_key="proc-b", path=folder)
    refused(NotFoundError, services.process_folder, world["alice"], project_key="no-row", path=folder)
    # a folder of the server's disk is the operator's (and superusers') to choose, not a data manager's (issue 14)
    refused(PermissionDeniedError, services.process_folder, world["alice"], project_key="proc-a", path=folder)
    job = services.process_folder(world["admin"], project_key="proc-a", path=folder)
    assert (job.input_path, job.created_by, job.status) == (str(folder.resolve()), world["admin"], JobStatus.PENDING)
    # a project known only to the key store (the CLI's) belongs to superusers and the operator
    keyed = services.process_folder(world["admin"], project_key="no-row", path=folder)
    assert not selectors.visible_jobs(world["alice"]).filter(pk=keyed.pk).exists()
    refused(NotFoundError, services.cancel_job, world["alice"], keyed.pk)
    assert services.cancel_job(cli_operator(), keyed.pk).status == JobStatus.CANCELLED
