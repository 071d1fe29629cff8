"""Admin pages of projects, and subjects/events/upload slots with link history."""

from __future__ import annotations

from dicomflow.accounts.actors import cli_operator

import json

import pytest
from django.conf import settings
from django.urls import reverse

from dicomflow.catalog.models import Patient, Study
from dicomflow.accounts.models import AuditEntry
from dicomflow.errors import ConfirmationRequiredError, InputError
from dicomflow.projects import services
from dicomflow.projects.models import Project, StagingJob, UploadSlotLink
from dicomflow.testing import synth

OP = cli_operator()  # the command-line operator: may do all but re-identify


@pytest.fixture
def staged(tmp_path):
    from dicomflow.intake.services import import_paths

    info = synth.write_rt_study(tmp_path / "src", synth.PatientSpec("PATSLOT77", "Slot^Sam", "M", "19770707"),
                                n_slices=4, rows=16, cols=16, with_mr=False)
    import_paths([info.out_dir], workers=1)
    study = Study.objects.get(study_instance_uid=info.study_uid, project__isnull=True)
    project = services.create_project("slots-a", "Slots")
    job = services.stage_series(OP, project, study, [info.ct.series_uid], run_inline=True)
    return {"info": info, "study": study, "project": project, "job": job}


@pytest.mark.django_db
def test_slot_link_replacement_keeps_history(staged, django_user_model):
    project, study = staged["project"], staged["study"]
    patient = Patient.objects.get(patient_id="PATSLOT77")
    subject = services.enrol_subject(OP, project, None, patient, expected_sex="M", expected_birth_year=1977)
    baseline = services.add_event(OP, subject, "Baseline")
    follow_up = services.add_event(OP, subject, "Follow-up")
    assert (baseline.order, follow_up.order) == (0, 1)
    slot = services.add_slot(OP, baseline, "Planning CT")
    assert services.add_slot(OP, baseline, "Planning CT") == slot

    first_copy = Study.objects.get(project=project)
    with pytest.raises(InputError):  # a clinical study never goes into a slot
        services.link_study(OP, slot, study)
    user = django_user_model.objects.create_user("dora")
    services.add_member(OP, project, user, "data_manager")
    services.link_study(user, slot, first_copy)
    # another project's copy of the same study
    other = services.create_project("slots-b", "Other")
    services.stage_series(OP, other, study, [staged["info"].ct.series_uid], run_inline=True)
    with pytest.raises(InputError):  # another project's study does not fit this project's slot
        services.link_study(OP, slot, Study.objects.get(project=other))

    second_info = synth.write_image_series(staged["info"].out_dir.parent / "ct2", synth.PatientSpec("PATSLOT77", "Slot^Sam", "M", "19770707"),
                                           "CT", 4, 16, 16)
    from dicomflow.intake.services import import_paths

    import_paths([second_info.paths[0].parent], workers=1)
    second_clinical = Study.objects.get(study_instance_uid=second_info.study_uid)
    services.stage_series(OP, project, second_clinical, None, run_inline=True)
    second_copy = Study.objects.filter(project=project).exclude(pk=first_copy.pk).get()
    with pytest.raises(ConfirmationRequiredError):  # the slot holds a study: replacing it needs a yes
        services.link_study(user, slot, second_copy)
    slot.refresh_from_db()
    assert slot.study == first_copy and UploadSlotLink.objects.filter(slot=slot).count() == 1
    slot = services.link_study(user, slot, second_copy, confirm=True)
    assert slot.study == second_copy
    links = list(UploadSlotLink.objects.filter(slot=slot).order_by("id"))
    assert [link.study_id for link in links] == [first_copy.pk, second_copy.pk]
    assert links[0].replaced_at is not None and links[1].replaced_at is None
    assert links[0].linked_by == user
    assert services.link_study(user, slot, second_copy) and UploadSlotLink.objects.filter(slot=slot).count() == 2
    links = AuditEntry.objects.filter(action="slot_link", outcome="ok")
    assert links.count() == 2 and links.filter(username="dora").count() == 2  # the no-op relink is not audited


@pytest.mark.django_db
def test_update_options_follow_into_key_store(staged):
    project = staged["project"]
    services.update_project_options(project, {"retain_patient_characteristics": True, "date_shift_days": [-10, -5]})
    project.refresh_from_db()
    assert (project.date_shift_min_days, project.date_shift_max_days) == (-10, -5)
    stored = json.loads((settings.KEYS_DIR / "projects" / "slots-a.options.json").read_text())
    assert stored["retain_patient_characteristics"] is True and stored["date_shift_days"] == [-10, -5]
    with pytest.raises(InputError):
        services.update_project_options(project, {"retain_long_full_dates": True})  # and modified dates: both


@pytest.mark.django_db
def test_admin_pages(admin_client, staged):
    for model in ("project", "subject", "event", "uploadslot", "stagingjob", "stagedseries", "projectupload"):
        response = admin_client.get(reverse(f"admin:projects_{model}_changelist"))
        assert response.status_code == 200, model
    job = staged["job"]
    page = admin_client.get(reverse("admin:projects_stagingjob_changelist")).content.decode()
    assert "Completed" in page and f"{job.done}/{job.total}" in page
    assert admin_client.get(reverse("admin:projects_stagingjob_change", args=[job.pk])).status_code == 200
    record = admin_client.get(reverse("admin:projects_stagingjob_record", args=[job.pk, "csv"])).content.decode()
    lines = record.splitlines()
    assert lines[0] == "tag,keyword,action,option" and len(lines) == len(job.deid_record) + 1 > 10
    assert '"(0010,0010)",PatientName,P,basic' in lines and "PATSLOT77" not in record and "Slot" not in record
    as_json = admin_client.get(reverse("admin:projects_stagingjob_record", args=[job.pk, "json"])).json()
    assert as_json["record"] == job.deid_record and as_json["rt_integrity"]["external"] == []
    assert admin_client.get(reverse("admin:projects_project_change", args=[staged["project"].pk])).status_code == 200

    response = admin_client.post(reverse("admin:projects_project_add"), {
        "key": "admin-made", "name": "From the admin", "description": "",
        "options": json.dumps({"clean_descriptors": True, "retain_long_modified_dates": True}),
        "uid_root": "1.2.826.0.1.3680043.10.99", "date_shift_min_days": "-100", "date_shift_max_days": "-1",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    made = Project.objects.get(key="admin-made")
    assert made.deid_options().uid_root == "1.2.826.0.1.3680043.10.99"
    assert (settings.KEYS_DIR / "projects" / "admin-made.key").exists()
    bad = admin_client.post(reverse("admin:projects_project_add"), {
        "key": "admin-bad", "name": "x", "options": "{}", "uid_root": "not.a.uid",
        "date_shift_min_days": "0", "date_shift_max_days": "1",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    })
    assert bad.status_code == 200 and not Project.objects.filter(key="admin-bad").exists()
    assert StagingJob.objects.count() == 1


@pytest.mark.django_db
def test_admin_forms_write_through_the_services(admin_client, staged):
    """A subject added in the admin gets the enrolment checks; members changed there are audited."""
    from dicomflow.accounts.models import AuditEntry
    from dicomflow.projects.models import ProjectMembership, Subject

    project = staged["project"]
    form = {"project": project.pk, "study_subject_id": "PATSLOT77", "expected_sex": "M", "expected_birth_year": "1977",
            "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0"}
    refused = admin_client.post(reverse("admin:projects_subject_add"), form)
    assert refused.status_code == 200 and "clinical Patient ID" in refused.content.decode()
    assert not Subject.objects.exists()
    missing_sex = admin_client.post(reverse("admin:projects_subject_add"), {**form, "study_subject_id": "S-1",
                                                                            "expected_sex": ""})
    assert missing_sex.status_code == 200 and not Subject.objects.exists()
    added = admin_client.post(reverse("admin:projects_subject_add"), {**form, "study_subject_id": "S-1"})
    assert added.status_code == 302, added.content.decode()[:3000]
    assert Subject.objects.get().study_subject_id == "S-1"

    from django.contrib.auth import get_user_model

    vera = get_user_model().objects.create_user("vera")
    change = admin_client.post(reverse("admin:projects_project_change", args=[project.pk]), {
        "key": project.key, "name": project.name, "description": "", "options": json.dumps(project.options),
        "uid_root": "", "date_shift_min_days": project.date_shift_min_days,
        "date_shift_max_days": project.date_shift_max_days,
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-0-user": vera.pk, "memberships-0-role": "viewer", "memberships-0-project": project.pk,
    })
    assert change.status_code == 302, change.content.decode()[:3000]
    assert ProjectMembership.objects.get(project=project, user=vera).role == "viewer"
    [entry] = AuditEntry.objects.filter(action="role_change")
    assert entry.username == "admin" and entry.object == f"user #{vera.pk}"
