"""Staging through a REAL Celery worker: the task is queued on commit and only calls the service."""

from __future__ import annotations

from dicomflow.accounts.actors import cli_operator

import pytest
from django.contrib.auth.models import Permission

from dicomflow.catalog.models import Series, Study
from dicomflow.intake.models import ImportRun
from dicomflow.projects import selectors, services
from dicomflow.projects.models import Role, StagingJob, StagingStatus
from dicomflow.testing import synth

OP = cli_operator()  # the command-line operator: may do all but re-identify
from fixtures_celery import wait_for


@pytest.mark.django_db(transaction=True)
def test_staging_task_runs_in_the_worker(tmp_path, django_user_model, celery_worker_process):
    from dicomflow.intake.services import import_paths

    info = synth.write_rt_study(tmp_path / "src", synth.PatientSpec("PATCEL0001", "Worker^Wanda", "F", "19800101"),
                                n_slices=6, rows=16, cols=16, with_mr=False)
    import_paths([info.out_dir], workers=1, analyse=False)
    study = Study.objects.get(study_instance_uid=info.study_uid)
    project = services.create_project("celery-stage", "Celery")
    manager = django_user_model.objects.create_user("manny")
    manager.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    manager = django_user_model.objects.get(pk=manager.pk)
    services.add_member(OP, project, manager, Role.DATA_MANAGER)
    alice = django_user_model.objects.create_user("alice")
    services.add_member(OP, project, alice, Role.VIEWER)

    dose = info.dose_for(info.approved_plan)
    job = services.stage_series(manager, project, study, [dose.series_uid])
    assert job.task_id == "" or job.status == StagingStatus.PENDING
    done = wait_for(
        lambda: StagingJob.objects.filter(pk=job.pk, status__in=[StagingStatus.FINISHED, StagingStatus.FAILED]).first(),
        timeout=120, worker=celery_worker_process, what="the staging job to finish",
    )
    assert done.status == StagingStatus.FINISHED, done.error
    assert done.task_id and done.started_at and done.finished_at
    assert (done.stage, done.done, done.total) == ("done", 4, 4)  # the last stage's count: series recorded
    assert done.instances_new == len(info.ct.paths) + 3
    copies = Series.objects.filter(project=project)
    assert copies.count() == 4
    assert set(selectors.visible_series(alice)) == set(copies)

    # a re-delivered task finds the job taken and does nothing
    runs = ImportRun.objects.count()
    again = services.run_staging_job(job.pk)
    assert again.status == StagingStatus.FINISHED and ImportRun.objects.count() == runs
