"""Issue 14, item 3: the admin follows the access rules of API and web.

Attack reproduced: a staff user with catalog view permissions and no project saw every clinical
patient; the subject admin showed pseudonym ↔ clinical identity to any staff user; view-only staff
could run the "download results" action. Real requests through Django's test client to /admin/.
Personas (tests/fixtures_processing.py): alice data manager of A, dora re-identifier of A, charlie
no project; here each is made staff holding every *view* permission and nothing else.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from dicomflow.accounts.models import AuditAction, AuditEntry, AuditOutcome
from dicomflow.catalog.models import Instance, Patient
from dicomflow.processing import services
from dicomflow.processing.models import Job, JobStatus
from dicomflow.projects import services as project_services
from fixtures_processing import CLINICAL, world  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db
APPS = ("catalog", "intake", "projects", "processing", "export", "accounts")


def view_only_staff(user):
    """``user`` as staff with every model's view permission of the product's apps (and no other; not
    the clinical pool's, ``projects.view_clinical_pool``, which is what lets one see clinical data)."""
    user.is_staff = True
    user.save()
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")
                              .exclude(codename="view_clinical_pool"))
    user.refresh_from_db()
    return user


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def listed(client, model: str) -> int:
    response = client.get(reverse(f"admin:{model.replace('.', '_')}_changelist"))
    assert response.status_code == 200, (model, response.status_code)
    return response.context_data["cl"].result_count


def test_view_only_staff_without_a_project_sees_nothing_clinical(world):
    charlie = admin_client(view_only_staff(world["charlie"]))
    admin = admin_client(world["admin"])
    clinical = Patient.objects.get(patient_id=CLINICAL.patient_id)
    for model in ("catalog.patient", "catalog.study", "catalog.series", "catalog.instance", "catalog.seriescheck",
                  "processing.seriesstate", "intake.importrun", "projects.project", "projects.subject"):
        assert listed(charlie, model) == 0, model
        if model not in ("catalog.seriescheck", "projects.subject"):  # (none in this world)
            assert listed(admin, model) > 0, model  # there is something to hide
    search = charlie.get(reverse("admin:catalog_patient_changelist"), {"q": CLINICAL.patient_id})
    assert search.context_data["cl"].result_count == 0 and CLINICAL.name not in search.content.decode()
    # nor by guessing the row's address
    response = charlie.get(reverse("admin:catalog_patient_change", args=[clinical.pk]), follow=True)
    assert CLINICAL.patient_id not in response.content.decode()
    instance = Instance.objects.filter(series__project__isnull=True).first()
    response = charlie.get(reverse("admin:catalog_instance_change", args=[instance.pk]), follow=True)
    assert instance.sop_instance_uid not in response.content.decode()


def test_project_member_sees_the_project_copy_but_not_the_clinical_pool(world):
    alice = admin_client(view_only_staff(world["alice"]))
    series = listed(alice, "catalog.series")
    assert series == 1  # the project A copy only
    page = alice.get(reverse("admin:catalog_patient_changelist")).content.decode()
    assert "PSEUDO-A-0001" in page and CLINICAL.patient_id not in page
    assert listed(alice, "projects.project") == 1  # A, not B


def test_subject_admin_shows_the_clinical_identity_to_reidentifiers_only(world):
    clinical = Patient.objects.get(patient_id=CLINICAL.patient_id)
    subject = project_services.enrol_subject(world["admin"], world["a"], "SUBJ-A-7", clinical, "F",
                                             expected_birth_year=1970)
    url = reverse("admin:projects_subject_change", args=[subject.pk])
    alice = admin_client(view_only_staff(world["alice"]))  # data manager of A: pseudonyms, no identities
    page = alice.get(url)
    assert page.status_code == 200 and subject.pseudonym in page.content.decode()
    assert CLINICAL.patient_id not in page.content.decode()
    assert CLINICAL.patient_id not in alice.get(reverse("admin:projects_subject_changelist")).content.decode()
    charlie = admin_client(view_only_staff(world["charlie"]))  # no project: not even the subject
    assert subject.pseudonym not in charlie.get(url, follow=True).content.decode()
    dora = admin_client(view_only_staff(world["dora"]))  # re-identifier of A
    assert CLINICAL.patient_id in dora.get(url).content.decode()
    assert CLINICAL.patient_id in admin_client(world["admin"]).get(url).content.decode()


def test_view_only_staff_cannot_download_results_or_run_write_actions(world):
    job = services.create_job(project_key="proc-a", series_id=world["series"]["copy"].pk)
    alice = admin_client(view_only_staff(world["alice"]))  # data manager of A: may not see identities
    changelist = reverse("admin:processing_job_changelist")
    page = alice.get(changelist).content.decode()
    assert 'value="download_results"' in page and 'value="cancel"' not in page and 'value="retry"' not in page
    before = AuditEntry.objects.count()
    response = alice.post(changelist, {"action": "download_results", "_selected_action": [job.pk]}, follow=True)
    assert response.get("Content-Disposition") is None  # no ZIP
    shown = [str(m) for m in response.context["messages"]]
    assert any("you may not download the results" in m for m in shown), shown
    entry = AuditEntry.objects.filter(action=AuditAction.RESULT_DOWNLOAD).order_by("-pk").first()
    assert AuditEntry.objects.count() == before + 1
    assert (entry.outcome, entry.username, entry.object) == (AuditOutcome.DENIED, "alice", f"job #{job.pk}")
    # a write action is not offered, and posting it anyway changes nothing
    alice.post(changelist, {"action": "cancel", "_selected_action": [job.pk]}, follow=True)
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
    # staff outside the project do not even see the job to act on it
    charlie = admin_client(view_only_staff(world["charlie"]))
    assert listed(charlie, "processing.job") == 0
    response = charlie.post(changelist, {"action": "download_results", "_selected_action": [job.pk]}, follow=True)
    assert response.get("Content-Disposition") is None
