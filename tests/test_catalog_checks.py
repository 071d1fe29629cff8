"""Check results stored in the catalog: equal to the folder checks, incomplete CTs, sanity overrides,
and the analysis run by a REAL Celery worker after an import."""

import pytest

from dicomflow.testing import synth


def _import_and_analyse(*paths):
    from dicomflow.catalog.analysis import analyse_studies
    from dicomflow.intake.services import import_paths

    report = import_paths(list(paths), analyse=False, workers=1)
    analyse_studies(report.study_ids)
    return report


def _folder_reports(path) -> dict:
    from dicomflow.core.checks import check_path

    reports, skipped = check_path(path)
    assert not skipped
    return {r.uid: r.as_dict() for r in reports}


@pytest.mark.django_db
def test_ct_with_a_slice_removed_is_stored_incomplete_with_the_missing_position(tmp_path):
    from dicomflow.catalog.models import CheckFinding, Series
    from dicomflow.catalog.rt_selectors import series_checks

    holed = synth.write_image_series(tmp_path / "holed", modality="CT", n_slices=10, skip_slices=(4,))
    intact = synth.write_image_series(tmp_path / "intact", modality="CT", n_slices=10)
    _import_and_analyse(tmp_path / "holed", tmp_path / "intact")

    stored = series_checks(Series.objects.get(series_instance_uid=holed.series_uid))
    assert stored["complete"] is False
    assert stored["missing_slices"] == pytest.approx(holed.skipped_locations, abs=0.01)
    assert "COMPLETENESS_MISSING_SLICES" in {f["code"] for f in stored["findings"]}
    ok = series_checks(Series.objects.get(series_instance_uid=intact.series_uid))
    assert ok["complete"] is True and ok["missing_slices"] == []
    assert not CheckFinding.objects.filter(series__series_instance_uid=intact.series_uid, severity="ERROR").exists()
    # queryable: series with a given finding code
    with_gaps = set(CheckFinding.objects.filter(code="COMPLETENESS_MISSING_SLICES")
                    .values_list("series__series_instance_uid", flat=True))
    assert with_gaps == {holed.series_uid}


@pytest.mark.django_db
def test_oblique_and_multiframe_series_from_the_catalog_equal_the_folder_checks(tmp_path):
    from dicomflow.catalog.models import Study
    from dicomflow.catalog.rt_selectors import study_checks

    oblique = synth.write_image_series(tmp_path / "in" / "oblique", modality="MR", n_slices=8,
                                       orientation=synth.oblique_orientation(25), skip_slices=(3,))
    multi = synth.write_image_series(tmp_path / "in" / "multi", modality="CT", n_slices=8, multiframe=True,
                                     skip_slices=(5,))
    report = _import_and_analyse(tmp_path / "in")
    from_files = _folder_reports(tmp_path / "in")
    stored = {}
    for study in Study.objects.filter(id__in=report.study_ids):
        for entry in study_checks(study):
            entry.pop("checked_at")
            stored[entry["uid"]] = entry
    assert stored == from_files
    assert stored[oblique.series_uid]["complete"] is False
    assert stored[oblique.series_uid]["missing_slices"] == pytest.approx(oblique.skipped_locations, abs=0.01)
    assert stored[multi.series_uid]["complete"] is False
    assert stored[multi.series_uid]["missing_slices"] == pytest.approx(multi.skipped_locations, abs=0.01)


@pytest.mark.django_db
def test_rt_study_checks_from_the_catalog_equal_the_folder_checks_also_from_stored_records(tmp_path):
    """Including RT QC (structure sets re-read from the store) and consistency across the study."""
    from dicomflow.catalog.analysis import analyse_studies
    from dicomflow.catalog.models import Study
    from dicomflow.catalog.rt_selectors import study_checks

    def shrink(ds):  # a dose grid too small for the contours: RT QC must notice, from the catalog too
        if ds.Modality == "RTDOSE":
            ds.Rows, ds.Columns = 8, 8

    study = synth.write_rt_study(tmp_path / "rt", n_slices=8, absent_ct_structure_set=True, decorate=shrink)
    report = _import_and_analyse(study.out_dir)

    def stored():
        out = {}
        for s in Study.objects.filter(id__in=report.study_ids):
            for entry in study_checks(s):
                entry.pop("checked_at")
                out[entry["uid"]] = entry
        return out

    from_files = _folder_reports(study.out_dir)
    first = stored()
    assert first == from_files
    codes = {f["code"] for f in first[study.orphan_rtstruct.series_uid]["findings"]}
    assert "RTQC_REFERENCED_SERIES_ABSENT" in codes
    dose_codes = {f["code"] for d in study.doses for f in first[d.series_uid]["findings"]}
    assert "RTQC_DOSE_GRID_NOT_COVERING" in dose_codes
    assert analyse_studies(report.study_ids).read_from_store == 0
    assert stored() == first  # rebuilt from InstanceRefRecord rows, same answers


@pytest.mark.django_db
def test_sanity_result_and_override_with_reason(tmp_path, django_user_model):
    from dicomflow.catalog.analysis import override_sanity, record_sanity
    from dicomflow.catalog.models import Patient, SanityOverride, SanityResult, Study
    from dicomflow.catalog.rt_selectors import effective_sanity_status, sanity_results
    from dicomflow.core.checks import ExpectedSubject
    from dicomflow.errors import InputError

    patient = synth.PatientSpec(sex="F", birth_date="19650412")
    series = synth.write_image_series(tmp_path / "ct", patient=patient, modality="CT", n_slices=4)
    _import_and_analyse(tmp_path / "ct")
    study = Study.objects.get(study_instance_uid=series.study_uid)
    alice = django_user_model.objects.create_user("alice", password="x" * 12)

    matches = record_sanity(Patient.objects.get(), ExpectedSubject(sex="F", birth_year=1965), source="subject",
                            subject_ref="S-001")
    assert matches.status == "MATCHES" and matches.study is None and matches.compared == ["PatientSex", "PatientBirthDate"]

    conflict = record_sanity(study, ExpectedSubject(sex="M", birth_date="19650412"), user=alice)
    assert conflict.status == "CONFLICT"
    assert {f["code"] for f in conflict.findings} == {"SANITY_SEX_CONFLICT"}
    for reason in ("", "   ", None):
        with pytest.raises(InputError):
            override_sanity(conflict, alice, reason)
    with pytest.raises(InputError):
        override_sanity(conflict, None, "no user")
    assert SanityOverride.objects.count() == 0

    override = override_sanity(conflict, alice, "sex recorded wrongly at the scanner; confirmed with the clinic")
    conflict.refresh_from_db()
    assert conflict.status == "CONFLICT"  # the original result is kept
    assert effective_sanity_status(conflict) == "MATCHES"
    assert override.username == "alice" and override.reason.startswith("sex recorded")
    [stored] = sanity_results(study=study)
    assert stored["status"] == "CONFLICT" and stored["effective_status"] == "MATCHES"
    assert stored["overrides"][0]["user"] == "alice" and stored["overrides"][0]["reason"] == override.reason
    assert SanityResult.objects.filter(status="CONFLICT", overrides__isnull=False).count() == 1

    with pytest.raises(InputError):
        record_sanity(study, ExpectedSubject())  # nothing to compare


@pytest.mark.django_db
def test_inconsistent_headers_give_inconsistent_sanity(tmp_path):
    from dicomflow.catalog.analysis import record_sanity
    from dicomflow.catalog.models import Study
    from dicomflow.core.checks import ExpectedSubject

    def flip_every_other(ds):
        if int(ds.InstanceNumber) % 2:
            ds.PatientSex = "M"

    series = synth.write_image_series(tmp_path / "ct", modality="CT", n_slices=4, decorate=flip_every_other)
    _import_and_analyse(tmp_path / "ct")
    result = record_sanity(Study.objects.get(study_instance_uid=series.study_uid), ExpectedSubject(sex="F"))
    assert result.status == "INCONSISTENT"


@pytest.mark.django_db(transaction=True)
def test_import_queues_the_analysis_and_a_real_worker_stores_it(tmp_path, celery_worker_process):
    from fixtures_celery import wait_for

    from dicomflow.catalog.models import SeriesCheck, Study
    from dicomflow.catalog.rt_selectors import study_tree
    from dicomflow.core.rt import graph_from_path
    from dicomflow.intake.services import import_paths

    study = synth.write_rt_study(tmp_path / "rt", n_slices=6, with_mr=False)
    report = import_paths([study.out_dir], workers=1)  # analyse=True: queued on commit
    n_series = len(study.series_uids)
    wait_for(lambda: SeriesCheck.objects.filter(study_id__in=report.study_ids).count() == n_series,
             timeout=90, worker=celery_worker_process, what="the worker's analysis")
    stored = {e["uid"]: e for e in study_tree(Study.objects.get(study_instance_uid=study.study_uid))["series"]}
    graph, _ = graph_from_path(study.out_dir)
    assert all(e.pop("analysed") for e in stored.values())
    assert stored == {e["uid"]: e for e in graph.tree()["series"]}


@pytest.mark.django_db
def test_admin_shows_stored_checks_view_only_and_reviewer_to_superusers_only(tmp_path, client, django_user_model):
    from django.contrib.auth.models import Permission

    from dicomflow.catalog.models import SeriesCheck

    study = synth.write_rt_study(tmp_path / "rt", n_slices=4, with_mr=False)
    _import_and_analyse(study.out_dir)
    plan = SeriesCheck.objects.get(series__series_instance_uid=study.approved_plan.series_uid)
    assert plan.reviewer_name  # stored
    url = f"/admin/catalog/seriescheck/{plan.pk}/change/"

    root = django_user_model.objects.create_superuser("root", password="x" * 12)
    client.force_login(root)
    assert client.get("/admin/catalog/seriescheck/").status_code == 200
    page = client.get(url)
    assert page.status_code == 200 and plan.reviewer_name in page.content.decode()
    assert client.post(url, {}).status_code == 403  # view only
    for model in ("seriesreference", "checkfinding", "sanityresult", "instancerefrecord"):
        assert client.get(f"/admin/catalog/{model}/").status_code == 200

    staff = django_user_model.objects.create_user("staff", password="x" * 12, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_seriescheck"))
    client.force_login(staff)
    assert client.get(url).status_code == 302  # the model permission alone shows no clinical row (issue 14)
    staff.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"))
    staff = django_user_model.objects.get(pk=staff.pk)  # (fresh permission cache)
    client.force_login(staff)
    page = client.get(url)
    assert page.status_code == 200 and plan.reviewer_name not in page.content.decode()


@pytest.mark.django_db
def test_sanity_against_a_research_subject(tmp_path):
    import datetime as dt

    from dicomflow.catalog.analysis import record_sanity_for_subject
    from dicomflow.catalog.models import Patient
    from dicomflow.catalog.rt_selectors import sanity_results
    from dicomflow.errors import InputError
    from dicomflow.projects.models import Project, Subject

    synth.write_image_series(tmp_path / "ct", patient=synth.PatientSpec(sex="F", birth_date="19650412"),
                             modality="CT", n_slices=3)
    _import_and_analyse(tmp_path / "ct")
    patient = Patient.objects.get()
    project = Project.objects.create(key="sanity", name="Sanity")
    right = Subject.objects.create(project=project, study_subject_id="S1", patient=patient, expected_sex="F",
                                   expected_birth_date=dt.date(1965, 4, 12))
    wrong = Subject.objects.create(project=project, study_subject_id="S2", expected_birth_year=1970)
    assert record_sanity_for_subject(right).status == "MATCHES"
    with pytest.raises(InputError):
        record_sanity_for_subject(wrong)  # no patient linked and no study given
    result = record_sanity_for_subject(wrong, target=patient)
    assert result.status == "CONFLICT" and result.subject == wrong and result.expected_source == "subject"
    assert [r["status"] for r in sanity_results(patient=patient)] == ["CONFLICT", "MATCHES"]


@pytest.mark.django_db(transaction=True)
def test_cstore_reception_is_analysed_by_the_worker(tmp_path, celery_worker_process):
    """The receiver catalogues without import_paths; the end of its ImportRun queues the analysis."""
    import os
    import subprocess

    from conftest import require_tool
    from fixtures_celery import wait_for

    from dicomflow.catalog.models import SeriesCheck, SeriesReference
    from dicomflow.intake.network.scp import StorageSCP

    exe = require_tool("storescu")
    study = synth.write_rt_study(tmp_path / "rt", n_slices=4, with_mr=False)
    scp = StorageSCP("ANALYSE_SCP", 0, [], host="127.0.0.1").start()
    try:
        sent = subprocess.run([exe, "-aet", "SENDER", "-aec", "ANALYSE_SCP", "127.0.0.1", str(scp.port),
                               "+sd", "+r", str(study.out_dir)], env=dict(os.environ, TCP_NODELAY="1"),
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
    finally:
        scp.stop(grace=5)
    n_series = len(study.series_uids)
    wait_for(lambda: SeriesCheck.objects.filter(series__study__study_instance_uid=study.study_uid).count() == n_series,
             timeout=90, worker=celery_worker_process, what="the analysis of the received study")
    present = set(SeriesReference.objects.filter(missing=False).values_list(
        "source__series_instance_uid", "target__series_instance_uid"))
    assert present == study.edges
