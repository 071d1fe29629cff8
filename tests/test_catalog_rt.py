"""The RT tree from the catalog: stored edges, approval, orphans and closures equal the folder core's.

Issue 5's "Done when", catalog side: a generated planning study (two plans, one approved; a dose for
each; an RT image on the approved plan; an unrelated MR; a structure set whose CT is absent) is
imported with ``import_paths``, analysed with ``analyse_studies``, and every answer read back from
the catalog is compared with ``dicomflow.core.rt`` on the same files and with what the generator
wrote.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.testing import synth

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))


@pytest.fixture(scope="module")
def rt_study(tmp_path_factory):
    return synth.write_rt_study(tmp_path_factory.mktemp("rt"), n_slices=8, absent_ct_structure_set=True)


@pytest.fixture(scope="module")
def folder_graph(rt_study):
    from dicomflow.core.rt import graph_from_path

    graph, result = graph_from_path(rt_study.out_dir)
    assert not result.skipped
    return graph


def _import_and_analyse(path):
    from dicomflow.catalog.analysis import analyse_studies
    from dicomflow.intake.services import import_paths

    report = import_paths([path], analyse=False, workers=1)
    summary = analyse_studies(report.study_ids)
    return report, summary


def _catalog_tree(study_ids) -> dict:
    from dicomflow.catalog.models import Study
    from dicomflow.catalog.rt_selectors import study_tree

    entries = {}
    for study in Study.objects.filter(id__in=study_ids):
        for entry in study_tree(study)["series"]:
            assert entry.pop("analysed") is True
            entries[entry["uid"]] = entry
    return entries


@pytest.mark.django_db
def test_tree_edges_approval_orphans_and_closures_equal_the_folder_core(rt_study, folder_graph):
    from dicomflow.catalog.models import Patient, SeriesReference
    from dicomflow.catalog.rt_selectors import approval_statuses, orphan_series, selection_closure

    report, summary = _import_and_analyse(rt_study.out_dir)
    assert summary.read_from_store == len(rt_study.paths) and summary.unreadable == 0

    # the whole tree document, series by series, equals the folder's
    stored = _catalog_tree(report.study_ids)
    from_files = {e["uid"]: e for e in folder_graph.tree()["series"]}
    assert stored == from_files

    # edges equal what the generator wrote (the orphan's CT is absent: a missing edge)
    present = set(SeriesReference.objects.filter(missing=False).values_list(
        "source__series_instance_uid", "target__series_instance_uid"))
    missing = set(SeriesReference.objects.filter(missing=True).values_list("source__series_instance_uid", "target_uid"))
    orphan_edge = (rt_study.orphan_rtstruct.series_uid, rt_study.absent_ct.series_uid)
    assert present == rt_study.edges - {orphan_edge}
    assert orphan_edge in missing
    assert SeriesReference.objects.filter(missing=True, target__isnull=False).count() == 0

    # approval: the approved plan and the draft
    from dicomflow.catalog.models import Study

    study = Study.objects.get(study_instance_uid=rt_study.study_uid)
    statuses = {a["uid"]: a for a in approval_statuses(study)}
    assert statuses[rt_study.approved_plan.series_uid]["approval_status"] == "APPROVED"
    assert statuses[rt_study.unapproved_plan.series_uid]["approval_status"] == "UNAPPROVED"
    assert all("reviewer_name" not in a for a in statuses.values())  # hidden unless allowed
    with_review = {a["uid"]: a for a in approval_statuses(study, include_review=True)}
    approved = with_review[rt_study.approved_plan.series_uid]
    assert approved["reviewer_name"] and approved["review_date"]
    assert with_review[rt_study.unapproved_plan.series_uid]["reviewer_name"] is None

    # orphans: the unrelated MR and the structure set whose CT is absent
    patient = Patient.objects.get()
    assert orphan_series(patient) == folder_graph.orphans()
    assert {rt_study.mr.series_uid, rt_study.orphan_rtstruct.series_uid} <= set(orphan_series(patient))

    # closures: dose → plan, structure set, CT; RT image → the same
    chain = {rt_study.approved_plan.series_uid, rt_study.rtstruct.series_uid, rt_study.ct.series_uid}
    dose = rt_study.dose_for(rt_study.approved_plan).series_uid
    for start in (dose, rt_study.rtimage.series_uid):
        closure = selection_closure(start)
        assert closure == folder_graph.closure(start)
        assert set(closure) == chain | {start}
    draft_dose = rt_study.dose_for(rt_study.unapproved_plan).series_uid
    assert rt_study.approved_plan.series_uid not in selection_closure(draft_dose)
    for uid in folder_graph.series:  # every series, and a multi-series selection
        assert selection_closure(uid) == folder_graph.closure(uid)
    assert selection_closure(draft_dose, dose) == folder_graph.closure(draft_dose, dose)


@pytest.mark.django_db
def test_registration_and_plan_without_structure_set_through_frames_of_reference(tmp_path):
    """Frame-of-reference edges (REG → MR and CT across two studies; plan → CT) equal the folder's."""
    from dicomflow.core.rt import graph_from_path

    study = synth.write_rt_study(tmp_path / "rt", n_slices=6, with_registration=True, plan_without_structure_set=True)
    report, _ = _import_and_analyse(study.out_dir)
    graph, _ = graph_from_path(study.out_dir)
    assert _catalog_tree(report.study_ids) == {e["uid"]: e for e in graph.tree()["series"]}
    from dicomflow.catalog.models import SeriesReference

    present = set(SeriesReference.objects.filter(missing=False).values_list(
        "source__series_instance_uid", "target__series_instance_uid"))
    assert present == study.edges
    assert SeriesReference.objects.filter(source__series_instance_uid=study.plans[2].series_uid,
                                          via="frame_of_reference", missing=False).exists()


@pytest.mark.django_db
def test_two_patients_in_one_import_stay_apart(tmp_path):
    from dicomflow.catalog.models import Patient, SeriesReference
    from dicomflow.catalog.rt_selectors import orphan_series

    a = synth.write_rt_study(tmp_path / "in" / "a", n_slices=4, with_mr=False,
                             patient=synth.PatientSpec("PA", "A^A", "F", "19600101"))
    b = synth.write_rt_study(tmp_path / "in" / "b", n_slices=4, with_mr=True,
                             patient=synth.PatientSpec("PB", "B^B", "M", "19700101"))
    _import_and_analyse(tmp_path / "in")
    present = set(SeriesReference.objects.filter(missing=False).values_list(
        "source__series_instance_uid", "target__series_instance_uid"))
    assert present == a.edges | b.edges
    assert orphan_series(Patient.objects.get(patient_id="PA")) == []
    assert orphan_series(Patient.objects.get(patient_id="PB")) == [b.mr.series_uid]


@pytest.mark.django_db
def test_unknown_series_in_closure_is_refused():
    from dicomflow.catalog.rt_selectors import selection_closure
    from dicomflow.errors import InputError

    with pytest.raises(InputError):
        selection_closure("1.2.3.4.5.6.7.8.9")


@pytest.mark.django_db
def test_reanalysis_replaces_results_and_uses_stored_records(rt_study):
    from dicomflow.catalog.analysis import analyse_studies
    from dicomflow.catalog.models import CheckFinding, InstanceRefRecord, SeriesCheck, SeriesReference

    report, first = _import_and_analyse(rt_study.out_dir)
    counts = (SeriesReference.objects.count(), SeriesCheck.objects.count(), CheckFinding.objects.count())
    tree = _catalog_tree(report.study_ids)
    second = analyse_studies(report.study_ids)
    assert second.read_from_store == 0  # rebuilt from InstanceRefRecord rows (RTSTRUCTs re-read only)
    assert InstanceRefRecord.objects.count() == len(rt_study.paths)
    assert (SeriesReference.objects.count(), SeriesCheck.objects.count(), CheckFinding.objects.count()) == counts
    assert _catalog_tree(report.study_ids) == tree
    assert analyse_studies([10**9]).studies == []  # a vanished study is ignored


@pytest.mark.django_db
def test_late_images_resolve_a_missing_reference(tmp_path):
    """The structure set arrives first (CT missing), then the CT: the stored edge becomes present."""
    from dicomflow.catalog.models import SeriesReference

    study = synth.write_rt_study(tmp_path / "src", n_slices=6, with_mr=False)
    first_dir, ct_dir = tmp_path / "first", tmp_path / "ct"
    shutil.copytree(study.out_dir, first_dir, ignore=shutil.ignore_patterns("CT"))
    shutil.copytree(study.out_dir / "CT", ct_dir)

    from dicomflow.catalog.models import Study
    from dicomflow.catalog.rt_selectors import analysis_state
    from dicomflow.intake.services import import_paths

    _import_and_analyse(first_dir)
    catalogued = Study.objects.get(study_instance_uid=study.study_uid)
    assert analysis_state(catalogued)["stale"] is False
    rs, ct = study.rtstruct.series_uid, study.ct.series_uid
    assert SeriesReference.objects.filter(source__series_instance_uid=rs, target_uid=ct, missing=True).exists()
    import_paths([ct_dir], analyse=False, workers=1)
    assert analysis_state(catalogued)["stale"] is True  # instances arrived after the analysis
    _import_and_analyse(ct_dir)
    assert analysis_state(catalogued)["stale"] is False
    edges = SeriesReference.objects.filter(source__series_instance_uid=rs, target_uid=ct)
    assert {e.via for e in edges} == {"series", "image"}  # Referenced Series and Contour Image items
    assert all(not e.missing and e.target.series_instance_uid == ct for e in edges)


@pytest.mark.django_db
def test_cross_study_reference_is_linked_and_late_study_reanalyses_the_waiting_one(tmp_path):
    """A structure set in one study naming a CT in another study of the patient; the CT study comes later."""
    from dicomflow.catalog.models import SeriesReference, Study

    from pydicom.uid import generate_uid

    ct = synth.write_image_series(tmp_path / "ct", modality="CT", n_slices=5)
    rs_study_uid = generate_uid()
    rs = synth.write_rtstruct(tmp_path / "rs", ct, decorate=lambda ds: setattr(ds, "StudyInstanceUID", rs_study_uid))
    _import_and_analyse(tmp_path / "rs")
    assert SeriesReference.objects.get(source__series_instance_uid=rs.series_uid).missing
    report, summary = _import_and_analyse(tmp_path / "ct")
    rs_study = Study.objects.get(study_instance_uid=rs_study_uid).id
    assert rs_study in summary.studies  # re-analysed because it was waiting for this CT
    edge = SeriesReference.objects.get(source__series_instance_uid=rs.series_uid, via="series")
    assert not edge.missing and edge.target.series_instance_uid == ct.series_uid


def _run_cli(home: Path, *args: str) -> dict:
    env = dict(os.environ, DICOMFLOW_HOME=str(home), DICOMFLOW_FSYNC="never")
    env.pop("DATABASE_URL", None)
    result = subprocess.run([DICOMFLOW, *args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow  # six CLI processes (~15 s idle, more under load)
def test_cli_import_analyse_then_catalog_tree_select_and_checks(tmp_path, rt_study, folder_graph):
    home = tmp_path / "home"
    _run_cli(home, "import", "--analyse", str(rt_study.out_dir))
    tree = _run_cli(home, "catalog", "tree", rt_study.study_uid)
    from_files = {e["uid"]: e for e in folder_graph.tree()["series"]}
    assert {e["uid"]: {k: v for k, v in e.items() if k != "analysed"} for e in tree["series"]} == {
        uid: e for uid, e in from_files.items() if e["study_uid"] == rt_study.study_uid
    }
    dose = rt_study.dose_for(rt_study.approved_plan).series_uid
    assert _run_cli(home, "catalog", "select", dose) == {"selected": folder_graph.closure(dose)}
    checks = _run_cli(home, "catalog", "checks", rt_study.ct.series_uid)
    assert checks["series"][0]["uid"] == rt_study.ct.series_uid and checks["series"][0]["complete"] is True
    # analysing again (everything) is idempotent and reports the studies it covered
    again = _run_cli(home, "catalog", "analyse", "--all")
    assert len(again["studies"]) == 2 and again["read_from_store"] == 0

    # an unknown study fails clearly, with the JSON error document
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    env.pop("DATABASE_URL", None)
    result = subprocess.run([DICOMFLOW, "catalog", "tree", "1.2.3.999", "--json"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "import it first" in json.loads(result.stdout)["error"]
