"""Per-project access: alice (project A), bob (project B), charlie (no project), clara (clinical pool)."""

from __future__ import annotations

from dicomflow.accounts.actors import cli_operator

import pytest
from django.contrib.auth.models import Permission

from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Role
from dicomflow.testing import synth

OP = cli_operator()  # the command-line operator: may do all but re-identify


@pytest.fixture
def world(tmp_path, django_user_model):
    """One clinical RT study staged into A (dose closure) and into B (structure set closure)."""
    from dicomflow.intake.services import import_paths

    info = synth.write_rt_study(tmp_path / "src", synth.PatientSpec("PATACC0815", "Persona^Paula", "F", "19700101"),
                                n_slices=6, rows=16, cols=16, with_mr=False)
    import_paths([info.out_dir], workers=1)
    study = Study.objects.get(study_instance_uid=info.study_uid)
    a = services.create_project("acc-a", "A")
    b = services.create_project("acc-b", "B")
    users = {name: django_user_model.objects.create_user(name) for name in ("alice", "bob", "charlie", "clara")}
    services.add_member(OP, a, users["alice"], Role.DATA_MANAGER)
    services.add_member(OP, b, users["bob"], Role.REIDENTIFIER)
    users["clara"].user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    users["clara"] = django_user_model.objects.get(pk=users["clara"].pk)  # drop the permission cache
    dose = info.dose_for(info.approved_plan)
    assert services.stage_series(OP, a, study, [dose.series_uid], run_inline=True).status == "finished"
    assert services.stage_series(OP, b, study, [info.rtstruct.series_uid], run_inline=True).status == "finished"
    return {"info": info, "study": study, "a": a, "b": b, **users}


def uids(qs, field):
    return set(qs.values_list(field, flat=True))


@pytest.mark.django_db
def test_each_persona_sees_exactly_their_studies_and_series(world):
    a_studies = uids(Study.objects.filter(project=world["a"]), "study_instance_uid")
    b_studies = uids(Study.objects.filter(project=world["b"]), "study_instance_uid")
    clinical = {world["info"].study_uid}
    assert len(a_studies) == len(b_studies) == 1 and a_studies != b_studies

    assert uids(selectors.visible_studies(world["alice"]), "study_instance_uid") == a_studies
    assert uids(selectors.visible_studies(world["bob"]), "study_instance_uid") == b_studies
    assert uids(selectors.visible_studies(world["charlie"]), "study_instance_uid") == set()
    assert uids(selectors.visible_studies(world["clara"]), "study_instance_uid") == clinical

    a_series = uids(Series.objects.filter(project=world["a"]), "series_instance_uid")
    assert len(a_series) == 4
    assert uids(selectors.visible_series(world["alice"]), "series_instance_uid") == a_series
    assert uids(selectors.visible_series(world["charlie"]), "series_instance_uid") == set()
    assert uids(selectors.visible_series(world["bob"]), "series_instance_uid") == uids(
        Series.objects.filter(project=world["b"]), "series_instance_uid")
    assert not selectors.visible_series(world["clara"]).filter(project__isnull=False).exists()

    alice_patients = selectors.visible_patients(world["alice"])
    assert list(alice_patients) == list(Patient.objects.filter(project=world["a"]))
    assert "PATACC0815" not in uids(alice_patients, "patient_id")
    assert uids(selectors.visible_patients(world["clara"]), "patient_id") == {"PATACC0815"}
    assert selectors.visible_instances(world["alice"]).count() == Instance.objects.filter(
        series__project=world["a"]).count() > 0
    assert selectors.visible_instances(world["charlie"]).count() == 0


@pytest.mark.django_db
def test_projects_roles_and_superuser(world, django_user_model):
    assert list(selectors.projects_for(world["alice"])) == [world["a"]]
    assert list(selectors.projects_for(world["charlie"])) == []
    assert selectors.can_reidentify(world["bob"], world["b"])
    assert not selectors.can_reidentify(world["bob"], world["a"])
    assert not selectors.can_reidentify(world["alice"], world["a"])  # data manager, not re-identifier
    assert selectors.can_see_clinical(world["clara"]) and not selectors.can_see_clinical(world["alice"])
    root = django_user_model.objects.create_superuser("root")
    assert selectors.visible_studies(root).count() == Study.objects.count() == 3
    assert not selectors.can_reidentify(root, world["a"])  # needs an explicit, audited grant
    from django.contrib.auth.models import AnonymousUser

    assert selectors.visible_studies(AnonymousUser()).count() == 0


@pytest.mark.django_db
def test_only_clinical_data_managers_may_stage(world):
    from dicomflow.errors import NotFoundError, PermissionDeniedError

    study, info = world["study"], world["info"]
    with pytest.raises(PermissionDeniedError):  # member, data manager, but no clinical access
        services.stage_series(world["alice"], world["a"], study, [info.ct.series_uid], run_inline=True)
    with pytest.raises(NotFoundError):  # clinical access, not a member: the project does not exist for her
        services.stage_series(world["clara"], world["a"], study, [info.ct.series_uid], run_inline=True)
    from dicomflow.accounts.models import AuditEntry

    refusals = AuditEntry.objects.filter(action="stage", outcome="denied").order_by("id")
    assert list(refusals.values_list("username", flat=True)) == ["alice", "clara"]  # both refusals audited
    services.add_member(OP, world["a"], world["clara"], Role.DATA_MANAGER)
    job = services.stage_series(world["clara"], world["a"], study, [info.ct.series_uid], run_inline=True)
    assert job.status == "finished" and job.created_by == world["clara"]
