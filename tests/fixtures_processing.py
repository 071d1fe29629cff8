"""The persona world of the processing tests (imported by the test modules that use it).

Projects A and B; alice: data manager of A (no clinical pool), bob: viewer of B, charlie: no project,
dora: re-identifier of A, admin: superuser. A clinical CT (the rules match ct-body-lungs), a CT copy
held by project A (as staging leaves it), an MR no rule matches, and a CT with a missing slice.
"""

from __future__ import annotations

import pytest

from dicomflow.catalog.models import Patient, Series, Study
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.projects.models import Project, ProjectMembership, Role
from dicomflow.testing.synth import PatientSpec, write_image_series

CLINICAL = PatientSpec("PROC-PAT-0001", "Clinical^Clara", "F", "19700101")


def _series(uid: str) -> Series:
    return Series.objects.get(series_instance_uid=uid)


def _make_copy(series: Series, project: Project) -> Series:
    """Put an imported series' rows into ``project`` (what staging leaves: a project-held copy)."""
    Patient.objects.filter(pk=series.study.patient_id).update(project=project)
    Study.objects.filter(pk=series.study_id).update(project=project)
    Series.objects.filter(pk=series.pk).update(project=project)
    return Series.objects.get(pk=series.pk)


@pytest.fixture
def world(tmp_path, django_user_model):
    services.ensure_builtin_templates()
    size = {"n_slices": 12, "rows": 32, "cols": 32}
    ct = write_image_series(tmp_path / "ct", CLINICAL, seed=f"proc-ct-{tmp_path.name}", **size)
    copy = write_image_series(tmp_path / "copy", PatientSpec("PSEUDO-A-0001", "A^Subject"),
                              seed=f"proc-copy-{tmp_path.name}", **size)
    mr = write_image_series(tmp_path / "mr", CLINICAL, modality="MR", seed=f"proc-mr-{tmp_path.name}", **size)
    gap = write_image_series(tmp_path / "gap", CLINICAL, skip_slices=[5], seed=f"proc-gap-{tmp_path.name}", **size)
    import_paths([tmp_path / name for name in ("ct", "copy", "mr", "gap")], workers=1)
    a = Project.objects.create(key="proc-a", name="A")
    b = Project.objects.create(key="proc-b", name="B")
    users = {name: django_user_model.objects.create_user(name, password=f"pw-{name}-123")
             for name in ("alice", "bob", "charlie", "dora")}
    users["admin"] = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw-admin-123")
    for project, name, role in ((a, "alice", Role.DATA_MANAGER), (b, "bob", Role.VIEWER),
                                (a, "dora", Role.REIDENTIFIER)):
        ProjectMembership.objects.create(project=project, user=users[name], role=role)
    copy_series = _make_copy(_series(copy.series_uid), a)
    series = {"ct": _series(ct.series_uid), "copy": copy_series, "mr": _series(mr.series_uid),
              "gap": _series(gap.series_uid)}
    services.evaluate_series([s.pk for s in series.values()])
    return {"a": a, "b": b, **users, "series": series, "info": {"ct": ct, "copy": copy, "mr": mr, "gap": gap}}
