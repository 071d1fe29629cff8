"""Query shapes for a large catalog (issue 15): the processing page's status filter is set-based
(EXISTS / NOT EXISTS) and must agree with the per-row status shown on the page, for every status;
the instance count and latest job stay right; the number of queries does not grow with the rows."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.processing import selectors
from dicomflow.processing.models import Job, SeriesState, Template

JOB_STATES = [None, "pending", "running", "waiting", "finished", "failed", "cancelled"]
RULE_STATES = [None, "RULE_MATCHED", "RULE_NOT_MATCHED", "MULTIPLE_RULES_MATCHED", "NO_TEMPLATE_FOUND", "ERROR",
               "RESULT_EXPORTED", "UNPROCESSED"]


@pytest.fixture
def catalog(django_user_model):
    admin = django_user_model.objects.create_superuser("scale-admin", "a@example.invalid", "pw")
    template = Template.objects.create(name="scale-t", definition={"processor": "noop"})
    patient = Patient.objects.create(patient_id="SCALE1", patient_name="SCALE^ONE")
    study = Study.objects.create(patient=patient, study_instance_uid="1.2.3.900", study_date=date(2020, 1, 1))
    expected = {}
    uid = itertools.count(1)
    for n, (job_state, rule_state) in enumerate(itertools.product(JOB_STATES, RULE_STATES)):
        series = Series.objects.create(study=study, series_instance_uid=f"1.2.3.900.{n}", modality="CT",
                                       series_number=n)
        for k in range(n % 3):
            Instance.objects.create(series=series, sop_class_uid="1.2", sop_instance_uid=f"1.2.3.901.{next(uid)}",
                                    sha256="0" * 64, size=1, stored_path="x", instance_number=k)
        if rule_state:
            SeriesState.objects.create(series=series, status=rule_state)
        if job_state:
            # an older job of another status first: only the latest non-cancelled one counts
            old = Job.objects.create(series=series, template=template, project_key="p", status="failed")
            Job.objects.filter(pk=old.pk).update(created_at=old.created_at - timedelta(hours=1))
            Job.objects.create(series=series, template=template, project_key="p", status=job_state)
        if job_state and job_state != "cancelled":
            status = selectors._JOB_TO_DESK[job_state]
        elif job_state == "cancelled":  # the older failed job is the latest live one
            status = "failed"
        else:
            status = selectors._RULE_TO_DESK.get(rule_state, "not_evaluated")
        expected[series.series_instance_uid] = (status, n % 3)
    return admin, expected


@pytest.mark.django_db
def test_every_status_filter_agrees_with_the_status_each_row_shows(catalog):
    admin, expected = catalog
    rows = {s.series_instance_uid: (s.desk_status, s.n_instances) for s in selectors.series_for_processing(admin)}
    assert rows == expected
    for status in selectors.DESK_STATUSES:
        filtered = {s.series_instance_uid for s in selectors.series_for_processing(admin, status=status)}
        assert filtered == {uid for uid, (st, _) in expected.items() if st == status}, status
        assert all(s.desk_status == status for s in selectors.series_for_processing(admin, status=status))
    assert {st for st, _ in expected.values()} >= {"sent", "processing", "processed", "failed", "matched",
                                                   "not_evaluated"}


@pytest.mark.django_db
def test_the_page_query_is_one_statement_whatever_the_number_of_rows(catalog):
    admin, expected = catalog
    for status in ("", "failed", "not_evaluated"):
        with CaptureQueriesContext(connection) as ctx:
            rows = list(selectors.series_for_processing(admin, status=status)[:50])
            [(r.study.patient.patient_id, r.n_instances, r.latest_job_id, r.processing_state) for r in rows
             if hasattr(r, "processing_state")]
        assert rows and len(ctx.captured_queries) == 1, [q["sql"][:200] for q in ctx.captured_queries]
        assert "JOIN \"catalog_instance\"" not in ctx.captured_queries[0]["sql"]  # no GROUP BY over instances
