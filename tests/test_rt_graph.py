"""RT graph from files: edges, approval statuses, missing references, closures, CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from dicomflow.core.rt import ApprovalStatus, InstanceRef, Reference, RefKind, RTGraph, graph_from_path
from dicomflow.core.rt.model import instance_from_dataset
from dicomflow.errors import InputError, MissingAttributeError
from dicomflow.testing import synth


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtstudy")
    info = synth.write_rt_study(out, n_slices=8, rows=32, cols=32, absent_ct_structure_set=True)
    (out / "notes.txt").write_text("not dicom")
    (out / "random.bin").write_bytes(bytes(range(256)) * 4)
    return info


@pytest.fixture(scope="module")
def graph(study):
    g, result = graph_from_path(study.out_dir)
    assert sorted(map(str, result.skipped)) == sorted(str(study.out_dir / n) for n in ("notes.txt", "random.bin"))
    return g


def test_edges_match_what_was_written(study, graph):
    found = {(e.source, e.target) for e in graph.edges()}
    dangling = {(uid, missing) for uid, node in graph.series.items() for missing in node.missing_references}
    assert found | dangling == study.edges
    assert (study.orphan_rtstruct.series_uid, study.absent_ct.series_uid) in dangling
    assert set(graph.series) == set(study.series_uids)


def test_approval_statuses(study, graph):
    assert graph.series[study.approved_plan.series_uid].approval_status == ApprovalStatus.APPROVED
    assert graph.series[study.unapproved_plan.series_uid].approval_status == ApprovalStatus.UNAPPROVED
    approved = graph.series[study.approved_plan.series_uid]
    # Review date and reviewer are kept as separate fields (the caller decides who sees them).
    assert approved.review_date and approved.reviewer_name
    assert graph.series[study.unapproved_plan.series_uid].reviewer_name is None
    assert graph.series[study.ct.series_uid].approval_status is None
    assert graph.series[study.doses[0].series_uid].approval_status is None


def test_orphans_and_missing_references(study, graph):
    orphan = graph.series[study.orphan_rtstruct.series_uid]
    assert orphan.missing_references == {study.absent_ct.series_uid}
    assert orphan.references == set()
    assert set(graph.orphans()) == {study.mr.series_uid, study.orphan_rtstruct.series_uid}
    for uid in (study.ct.series_uid, study.rtstruct.series_uid, *[p.series_uid for p in study.plans]):
        assert graph.series[uid].missing_references == set()


def test_closures(study, graph):
    base = {study.rtstruct.series_uid, study.ct.series_uid}
    approved, unapproved = study.approved_plan, study.unapproved_plan
    assert set(graph.closure(study.dose_for(approved).series_uid)) == base | {
        approved.series_uid,
        study.dose_for(approved).series_uid,
    }
    assert set(graph.closure(study.dose_for(unapproved).series_uid)) == base | {
        unapproved.series_uid,
        study.dose_for(unapproved).series_uid,
    }
    assert set(graph.closure(study.rtimage.series_uid)) == base | {approved.series_uid, study.rtimage.series_uid}
    assert graph.closure(study.mr.series_uid) == [study.mr.series_uid]
    assert graph.closure(study.orphan_rtstruct.series_uid) == [study.orphan_rtstruct.series_uid]
    # the requested series comes first
    assert graph.closure(study.rtimage.series_uid)[0] == study.rtimage.series_uid
    with pytest.raises(InputError):
        graph.closure("1.2.3.4.5")


def test_parallel_scan_gives_the_same_graph(study, graph):
    parallel, _ = graph_from_path(study.out_dir, workers=2)
    assert parallel.tree() == graph.tree()


def test_cli_tree_contract(study):
    proc = run_cli("rt", "tree", str(study.out_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    by_uid = {s["uid"]: s for s in doc["series"]}
    assert set(by_uid) == set(study.series_uids)
    for s in doc["series"]:
        assert {"uid", "modality", "references", "missing_references", "approval_status"} <= set(s)
    dose = by_uid[study.dose_for(study.approved_plan).series_uid]
    assert dose["modality"] == "RTDOSE" and dose["references"] == [study.approved_plan.series_uid]
    assert by_uid[study.unapproved_plan.series_uid]["approval_status"] == "UNAPPROVED"
    assert by_uid[study.approved_plan.series_uid]["approval_status"] == "APPROVED"
    assert by_uid[study.orphan_rtstruct.series_uid]["missing_references"] == [study.absent_ct.series_uid]
    assert by_uid[study.rtstruct.series_uid]["references"] == [study.ct.series_uid]
    assert "skipped 2" in proc.stderr


def test_cli_select_contract(study):
    dose = study.dose_for(study.approved_plan)
    proc = run_cli("rt", "select", str(study.out_dir), study.rtimage.series_uid, "--json")
    assert proc.returncode == 0, proc.stderr
    selected = json.loads(proc.stdout)["selected"]
    assert set(selected) == {study.rtimage.series_uid, study.approved_plan.series_uid,
                             study.rtstruct.series_uid, study.ct.series_uid}
    proc = run_cli("rt", "select", str(study.out_dir), dose.series_uid, study.mr.series_uid, "--json")
    assert set(json.loads(proc.stdout)["selected"]) == {dose.series_uid, study.approved_plan.series_uid,
                                                        study.rtstruct.series_uid, study.ct.series_uid,
                                                        study.mr.series_uid}
    bad = run_cli("rt", "select", str(study.out_dir), "1.2.3.999", "--json")
    assert bad.returncode != 0 and "error" in json.loads(bad.stdout)
    missing = run_cli("rt", "tree", str(study.out_dir / "nope"), "--json")
    assert missing.returncode != 0


def test_plan_without_structure_set_links_to_images_through_frame_of_reference(tmp_path):
    info = synth.write_rt_study(tmp_path, n_slices=6, rows=32, cols=32, with_mr=False,
                                plan_without_structure_set=True)
    graph, _ = graph_from_path(tmp_path)
    plan3 = info.plans[2]
    assert graph.series[plan3.series_uid].references == {info.ct.series_uid}
    assert set(graph.closure(info.dose_for(plan3).series_uid)) == {
        info.dose_for(plan3).series_uid, plan3.series_uid, info.ct.series_uid}
    assert {(e.source, e.target) for e in graph.edges()} == info.edges


def _strip_series_refs(ds):
    """A structure set that names its images only inside the contours (no RT Referenced Series)."""
    for item in ds.ReferencedFrameOfReferenceSequence:
        del item.RTReferencedStudySequence


def _strip_all_image_refs(ds):
    _strip_series_refs(ds)
    for roi in ds.ROIContourSequence:
        for contour in getattr(roi, "ContourSequence", []):
            del contour.ContourImageSequence


def test_structure_set_instance_refs_map_to_series_or_stay_instances(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=32, cols=32)
    rs = synth.write_rtstruct(tmp_path / "rs", ct, decorate=_strip_series_refs)
    graph, _ = graph_from_path(tmp_path)
    assert graph.series[rs.series_uid].references == {ct.series_uid}
    # With the CT absent the series cannot be known: the instance UIDs are reported.
    absent = synth.write_image_series(None, n_slices=6, rows=32, cols=32)
    lone = tmp_path / "lone"
    rs2 = synth.write_rtstruct(lone, absent, decorate=_strip_series_refs)
    graph2, _ = graph_from_path(lone)
    missing = graph2.series[rs2.series_uid].missing_references
    assert missing and missing <= set(absent.sop_instance_uids)
    assert absent.series_uid not in missing


def test_structure_set_with_frame_of_reference_only(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=32, cols=32)
    mr = synth.write_image_series(tmp_path / "mr", modality="MR", n_slices=4, rows=32, cols=32)
    rs = synth.write_rtstruct(tmp_path / "rs", ct, decorate=_strip_all_image_refs)
    graph, _ = graph_from_path(tmp_path)
    assert graph.series[rs.series_uid].references == {ct.series_uid}
    assert mr.series_uid not in graph.closure(rs.series_uid)


def test_registration_links_both_frames(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=32, cols=32)
    mr = synth.write_image_series(tmp_path / "mr", modality="MR", n_slices=4, rows=32, cols=32,
                                  study_uid=ct.study_uid)
    other = synth.write_image_series(tmp_path / "other", n_slices=4, rows=32, cols=32)
    reg = synth.write_registration(tmp_path / "reg", ct, mr)
    graph, _ = graph_from_path(tmp_path)
    assert graph.series[reg.series_uid].references == {ct.series_uid, mr.series_uid}
    assert set(graph.closure(reg.series_uid)) == {reg.series_uid, ct.series_uid, mr.series_uid}
    assert other.series_uid in graph.orphans()


def test_graph_from_catalog_like_records():
    """The graph needs no files: records as the catalog would build them from rows."""
    ct = [InstanceRef(f"1.9.{i}", "1.2.840.10008.5.1.4.1.1.2", "1.9.100", "1.9.0", "CT", "1.9.50") for i in range(3)]
    rs = InstanceRef("1.9.200.1", "1.2.840.10008.5.1.4.1.1.481.3", "1.9.200", "1.9.0", "RTSTRUCT",
                     references=(Reference(RefKind.IMAGE, "1.9.1"), Reference(RefKind.IMAGE, "1.9.77")))
    plan = InstanceRef("1.9.300.1", "1.2.840.10008.5.1.4.1.1.481.5", "1.9.300", "1.9.0", "RTPLAN", "1.9.50",
                       references=(Reference(RefKind.STRUCTURE_SET, "1.9.200.1"),
                                   Reference(RefKind.FRAME_OF_REFERENCE, "1.9.50")),
                       approval_status=ApprovalStatus.REJECTED)
    dose = InstanceRef("1.9.400.1", "1.2.840.10008.5.1.4.1.1.481.2", "1.9.400", "1.9.0", "RTDOSE", "1.9.50",
                       references=(Reference(RefKind.PLAN, "1.9.999"),))
    graph = RTGraph.from_instances([*ct, rs, plan, dose])
    assert graph.series["1.9.200"].references == {"1.9.100"}
    # an image of the CT absent from the catalog, series unknown: its instance UID is missing
    assert graph.series["1.9.200"].missing_references == {"1.9.77"}
    assert graph.series["1.9.300"].references == {"1.9.200"}  # FoR is only a fallback
    assert graph.series["1.9.400"].missing_references == {"1.9.999"}
    assert graph.closure("1.9.300") == ["1.9.300", "1.9.200", "1.9.100"]
    assert graph.tree()["series"][2]["approval_status"] == "REJECTED"


def test_instance_without_identity_is_refused(study):
    ds = pydicom.dcmread(study.ct.paths[0], stop_before_pixels=True)
    ref = instance_from_dataset(ds)
    assert ref.series_instance_uid == study.ct.series_uid and ref.modality == "CT"
    del ds.SeriesInstanceUID
    with pytest.raises(MissingAttributeError) as err:
        instance_from_dataset(ds, "x.dcm")
    assert "SeriesInstanceUID" in str(err.value)


def test_instance_ref_round_trips_through_json(study):
    ds = pydicom.dcmread(study.approved_plan.path, stop_before_pixels=True)
    ref = instance_from_dataset(ds)
    again = InstanceRef.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref and again.approval_status == ApprovalStatus.APPROVED
    assert any(r.kind == RefKind.STRUCTURE_SET for r in again.references)


def test_structure_set_approval_and_least_trusted_status_of_a_series(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=4, rows=32, cols=32)
    rs = synth.write_rtstruct(tmp_path / "rs", ct, approval_status="REJECTED")
    graph, _ = graph_from_path(tmp_path)
    node = graph.series[rs.series_uid]
    assert node.approval_status == ApprovalStatus.REJECTED and node.review_date
    # several plans in one series: the series is only as trusted as its least approved plan
    plans = [InstanceRef(f"1.8.{i}", "1.2.840.10008.5.1.4.1.1.481.5", "1.8.100", "1.8.0", "RTPLAN",
                         approval_status=status)
             for i, status in enumerate([ApprovalStatus.APPROVED, ApprovalStatus.UNAPPROVED, None])]
    assert RTGraph.from_instances(plans).series["1.8.100"].approval_status == ApprovalStatus.UNAPPROVED


def test_bare_dataset_without_preamble_is_read(tmp_path):
    from pydicom.filewriter import dcmwrite

    from dicomflow.core.rt import read_header

    info = synth.write_image_series(tmp_path / "src", n_slices=1, rows=32, cols=32)
    ds = pydicom.dcmread(info.paths[0])
    ds.preamble = None
    del ds.file_meta
    dcmwrite(tmp_path / "bare", ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert read_header(str(tmp_path / "bare")).SOPInstanceUID == info.sop_instance_uids[0]
    (tmp_path / "truncated.dcm").write_bytes(info.paths[0].read_bytes()[:300])
    assert read_header(str(tmp_path / "truncated.dcm")) is None
