"""Admin pages of processing: definitions validated, manual template choice, job actions, the log."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from dicomflow.catalog.models import Series
from dicomflow.core.rules import CT_BODY_LUNGS, SeriesStatus
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import Job, JobStatus, Ruleset, Template
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()


@pytest.fixture
def staff(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw-admin-123")
    client.force_login(user)
    return user


@pytest.fixture
def ct_series(tmp_path):
    info = write_image_series(tmp_path / "ct", patient=PatientSpec("ADM-PAT-1"), n_slices=12, rows=32, cols=32,
                              seed=f"admin-{tmp_path.name}")
    import_paths([tmp_path / "ct"], workers=1)
    return Series.objects.get(series_instance_uid=info.series_uid)


def test_changelists_render(client, staff, ct_series):
    services.evaluate_series([ct_series.id])
    for model in ("template", "ruleset", "seriesstate", "job", "logentry"):
        response = client.get(reverse(f"admin:processing_{model}_changelist"))
        assert response.status_code == 200, model
    response = client.get(reverse("admin:processing_logentry_changelist"), {"level__exact": "INFO", "q": "RULE_MATCHED"})
    assert b"RULE_MATCHED" in response.content


def test_invalid_ruleset_is_refused_in_the_admin(client, staff):
    response = client.post(reverse("admin:processing_ruleset_add"), {
        "name": "bad", "definition": '{"match": {"attribute": "Modality", "operator": "bigger", "value": "CT"}}',
        "enabled": "on", "order": "0"})
    assert response.status_code == 200 and b"unknown operator" in response.content
    assert not Ruleset.objects.filter(name="bad").exists()


def test_manual_template_choice_in_the_admin(client, staff, ct_series):
    Ruleset.objects.filter(name="ct-images").update(enabled=False)
    [state] = services.evaluate_series([ct_series.id])
    assert state.status == SeriesStatus.RULE_NOT_MATCHED.value
    template = Template.objects.get(name=CT_BODY_LUNGS)
    response = client.post(reverse("admin:processing_seriesstate_change", args=[state.pk]), {"template": template.pk})
    assert response.status_code == 302
    state.refresh_from_db()
    assert (state.status, state.template, state.chosen_by) == (SeriesStatus.RULE_MATCHED.value, template, staff)


def test_job_actions_retry_cancel_and_download(client, staff, ct_series, tmp_path):
    Template.objects.create(name="ghost", definition={"processor": "ghost.proc"})
    failed = services.run_job_inline(services.create_job(project_key="ADM", series_id=ct_series.id,
                                                         template_name="ghost").pk)
    url = reverse("admin:processing_job_changelist")
    client.post(url, {"action": "retry", "_selected_action": [failed.pk]})
    failed.refresh_from_db()
    assert failed.status == JobStatus.PENDING and failed.error == ""
    pending = services.create_job(project_key="ADM", series_id=ct_series.id)
    client.post(url, {"action": "cancel", "_selected_action": [pending.pk]})
    assert Job.objects.get(pk=pending.pk).status == JobStatus.CANCELLED

    done = services.run_job_inline(services.create_job(project_key="ADM", series_id=ct_series.id).pk)
    assert done.status == JobStatus.FINISHED
    response = client.post(url, {"action": "download_results", "_selected_action": [done.pk]})
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        [name] = zf.namelist()
    assert name.startswith("RS.")
    page = client.get(reverse("admin:processing_job_change", args=[done.pk]))
    assert page.status_code == 200 and b"exporting" in page.content.lower()


def test_add_job_goes_through_the_service_and_fields_are_read_only(client, staff, ct_series,
                                                                   django_capture_on_commit_callbacks):
    url = reverse("admin:processing_job_add")
    form = {"series": ct_series.pk, "project_key": "ADM", "template": "", "input_path": "", "out_dir": ""}
    Template.objects.create(name="mr-only", definition={"processor": "ghost.proc", "requires": {"modalities": ["MR"]}})
    refused = client.post(url, {**form, "template": Template.objects.get(name="mr-only").pk})
    assert refused.status_code == 200 and b"needs modality MR" in refused.content
    nothing = client.post(url, {**form, "series": ""})
    assert nothing.status_code == 200 and b"choose a catalogued series" in nothing.content
    assert not Job.objects.exists()

    with django_capture_on_commit_callbacks() as enqueued:
        response = client.post(url, form)
    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.template.name, job.created_by, job.stages.count(), len(enqueued)) == (CT_BODY_LUNGS, staff, 9, 1)
    page = client.get(reverse("admin:processing_job_change", args=[job.pk])).content.decode()
    assert 'name="status"' not in page and 'name="project_key"' not in page  # read-only: actions change jobs


def test_templates_named_by_a_ruleset_cannot_be_deleted_in_the_admin(client, staff):
    template = Template.objects.get(name=CT_BODY_LUNGS)
    url = reverse("admin:processing_template_delete", args=[template.pk])
    page = client.get(url)
    assert page.status_code == 200 and b"ct-images" in page.content  # the built-in ruleset chooses it
    client.post(url, {"post": "yes"})
    assert Template.objects.filter(pk=template.pk).exists()
    Ruleset.objects.filter(name="ct-images").delete()
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not Template.objects.filter(pk=template.pk).exists()
