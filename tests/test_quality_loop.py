"""The RT quality loop in the product: ratings through the API, the job page and the CSV; the
comparison made when an edited structure set comes back; derived structures in a real job; the
Eclipse import; statistics. Persona world: tests/fixtures_processing.py (alice: data manager of A,
dora: re-identifier of A, bob: viewer of B, charlie: no project)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pydicom
import pytest
from rest_framework.test import APIClient

from dicomflow.core.rules.model import RoiStyle
from dicomflow.core.segmentation.rtstruct import build_rtstruct, read_rtstruct_masks, write_dataset
from dicomflow.core.segmentation.volume import read_image_series
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import Template
from dicomflow.quality import services as quality
from dicomflow.quality import signals as quality_signals
from dicomflow.quality.models import StructureComparison

from fixtures_processing import world  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def finished_job(world, template: str = "ct-body-lungs"):
    [job] = services.send_for_processing(world["alice"], project_key="proc-a", template_name=template, inline=True,
                                         series_uids=[world["series"]["copy"].series_instance_uid])
    job.refresh_from_db()
    assert job.status == "finished", job.error
    return job


def test_ratings_round_trip_through_the_api_and_the_csv(world):
    job = finished_job(world)
    url = f"/api/jobs/{job.pk}/rating/"
    shown = api(world["alice"]).get(url).json()
    assert {"Body", "Lung_L", "Lung_R"} <= set(shown["roi_names"]) and shown["ratings"] == []
    body = {"overall_score": 8, "comment": "good enough", "rois": [
        {"name": "Body", "rating": "minor", "minutes": 3, "comment": "couch included"},
        {"name": "lung_l", "rating": "no_edit"}]}  # names match case-insensitively
    saved = api(world["alice"]).put(url, body, format="json")
    assert saved.status_code == 200, saved.content
    [rating] = saved.json()["ratings"]
    assert (rating["assessor"], rating["overall_score"], rating["comment"]) == ("alice", 8, "good enough")
    assert [(r["name"], r["rating"], r["minutes"]) for r in rating["rois"]] == [("Body", "minor", 3), ("Lung_L", "no_edit", None)]
    # a second assessor adds a rating; alice's second save replaces her first
    assert api(world["dora"]).put(url, {"overall_score": 5, "rois": [{"name": "Lung_R", "rating": "major", "minutes": 12}]},
                                  format="json").status_code == 200
    assert api(world["alice"]).put(url, {**body, "overall_score": 9}, format="json").status_code == 200
    ratings = {r["assessor"]: r for r in api(world["alice"]).get(url).json()["ratings"]}
    assert set(ratings) == {"alice", "dora"} and ratings["alice"]["overall_score"] == 9
    # refusals: another project's viewer sees no such job; bad values are 400 with a reason
    assert api(world["bob"]).get(url).status_code == 404
    assert api(world["bob"]).put(url, body, format="json").status_code == 404
    for bad, word in (({**body, "overall_score": 11}, "overall_score"),
                      ({**body, "rois": [{"name": "Heart", "rating": "minor"}]}, "no structure named"),
                      ({**body, "rois": [{"name": "Body", "rating": "great"}]}, "rating"),
                      ({**body, "rois": []}, "rois")):
        refused = api(world["alice"]).put(url, bad, format="json")
        assert refused.status_code == 400 and word in refused.content.decode(), refused.content
    # the CSV holds exactly the stored ratings, one row per rated ROI
    response = api(world["alice"]).get("/api/ratings.csv", {"project": "proc-a"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    got = sorted((r["assessor"], r["roi"], r["rating"], r["minutes"], r["overall_score"]) for r in rows)
    assert got == [("alice", "Body", "minor", "3", "9"), ("alice", "Lung_L", "no_edit", "", "9"),
                   ("dora", "Lung_R", "major", "12", "5")]
    assert all(r["job"] == str(job.pk) and r["template"] == "ct-body-lungs" for r in rows)
    assert "PROC-PAT" not in response.content.decode() and "Clara" not in response.content.decode()
    other = api(world["bob"]).get("/api/ratings.csv").content.decode().strip().splitlines()
    assert len(other) == 1  # bob sees no job of project A: the header only


def test_rating_on_the_job_page(world, client):
    job = finished_job(world)
    client.force_login(world["alice"])
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Contour rating" in page and "Save rating" in page and "Minutes editing" in page
    names = quality.result_roi_names(job)
    form = {"roi_count": str(len(names)), "overall_score": "7", "comment": "ok"}
    for i, name in enumerate(names):
        form |= {f"roi-{i}-name": name, f"roi-{i}-rating": "no_edit" if name != "Body" else "major",
                 f"roi-{i}-minutes": "4" if name == "Body" else ""}
    page = client.post(f"/jobs/{job.pk}/rating/", form, follow=True).content.decode()
    assert "Your rating of job" in page and "7/10" in page and "Body: major (4 min)" in page
    bob = client.__class__()
    bob.force_login(world["bob"])
    assert bob.post(f"/jobs/{job.pk}/rating/", form).status_code == 404


def test_an_edited_structure_set_is_compared_with_the_result(world, tmp_path, monkeypatch, django_capture_on_commit_callbacks):
    job = finished_job(world)
    result_path = quality.result_structure_set(job)
    series = read_image_series(world["info"]["copy"].paths)
    masks = read_rtstruct_masks(pydicom.dcmread(result_path), series)
    body = masks["Body"].copy()
    body[:, :, : body.shape[2] // 3] = False  # the clinician cut a third of the body outline away
    edited = build_rtstruct(series, [(RoiStyle("body", "Body", (0, 255, 0), "EXTERNAL"), body),
                                     (RoiStyle("lung_left", "Lung_L", (0, 0, 255)), masks["Lung_L"]),
                                     (RoiStyle("heart", "Heart", (255, 0, 0)), masks["Lung_R"])], label="EDITED")
    write_dataset(edited, tmp_path / "edited")
    ran = []
    from dicomflow.quality import tasks

    monkeypatch.setattr(tasks.compare_with_result, "apply_async",
                        lambda args, **kw: ran.append(quality.compare_with_result(*args)))
    with django_capture_on_commit_callbacks(execute=True):
        import_paths([tmp_path / "edited"], workers=1, project=world["a"])
    assert len(ran) == 1  # one comparison: the edited set, not the job's own catalogued result
    comparison = StructureComparison.objects.get(job=job)
    assert comparison.error == ""
    rois = {r["name"]: r for r in comparison.rois}
    assert rois["Lung_L"]["dice"] == pytest.approx(1.0, abs=0.02)
    assert 0.3 < rois["Body"]["dice"] < 0.95 and rois["Body"]["apl_mm"] > 0
    assert comparison.only_in_reference == ["Heart"] and "Lung_R" in comparison.only_in_result
    # importing the same set again compares nothing twice
    assert quality_signals.comparisons_to_make([comparison.reference.series_id]) == []
    shown = api(world["alice"]).get(f"/api/jobs/{job.pk}/comparisons/").json()
    assert shown[0]["rois"] == comparison.rois
    assert api(world["bob"]).get(f"/api/jobs/{job.pk}/comparisons/").status_code == 404


def test_a_real_job_writes_the_derived_ptv(world):
    definition = {**Template.objects.get(name="ct-body-lungs").definition}
    definition["derived"] = [{"name": "PTV", "color": [255, 0, 0], "type": "PTV",
                              "expression": {"op": "crop", "of": {"op": "margin", "of": "lung_left", "mm": 5},
                                             "to": "Body", "inside_mm": 2}}]
    services.create_template(world["admin"], name="ct-lungs-ptv", definition=definition)
    job = finished_job(world, "ct-lungs-ptv")
    ds = pydicom.dcmread(quality.result_structure_set(job))
    assert [r.ROIName for r in ds.StructureSetROISequence][-1] == "PTV"
    masks = read_rtstruct_masks(ds, read_image_series(world["info"]["copy"].paths))
    assert masks["PTV"].sum() > masks["Lung_L"].sum()  # grown by 5 mm ...
    assert not (masks["PTV"] & ~masks["Body"]).any()  # ... and kept inside the body
    assert "derived structure(s) added: PTV" in " ".join(job.log.values_list("message", flat=True))


def test_template_structures_are_tg263_and_eclipse_xml_imports(world, client):
    from test_quality_structures import ECLIPSE_XML

    definition = {**Template.objects.get(name="ct-body-lungs").definition}
    bad = {**definition, "rois": [{"key": "x", "name": "left lung", "color": [1, 2, 3], "type": "ORGAN"}]}
    refused = api(world["admin"]).post("/api/templates/", {"name": "bad-names", "definition": bad}, format="json")
    assert refused.status_code == 400 and "TG-263" in refused.content.decode()
    assert api(world["admin"]).post("/api/templates/", {"name": "local-names", "definition": {**bad, "nomenclature": "local"}},
                                     format="json").status_code == 201
    services.create_template(world["admin"], name="prostate", definition=definition)
    client.force_login(world["admin"])
    from django.core.files.uploadedfile import SimpleUploadedFile

    page = client.post("/processing/templates/prostate/structures/eclipse/",
                       {"structure_template": SimpleUploadedFile("prostate.xml", ECLIPSE_XML, "text/xml")},
                       follow=True).content.decode()
    assert "4 structures imported" in page
    rois = Template.objects.get(name="prostate").definition["rois"]
    assert [r["name"] for r in rois] == ["Bladder", "Rectum", "PTV_High", "External"]
    # the API does the same; a hostile file changes nothing
    hostile = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><StructureTemplate/>'
    response = api(world["admin"]).post("/api/templates/prostate/structures/eclipse/",
                                        {"file": SimpleUploadedFile("x.xml", hostile, "text/xml")}, format="multipart")
    assert response.status_code == 400 and "DTD" in response.content.decode()
    assert Template.objects.get(name="prostate").definition["rois"] == rois
    # alice manages a project but may not change templates
    denied = api(world["alice"]).post("/api/templates/prostate/structures/eclipse/",
                                      {"file": SimpleUploadedFile("p.xml", ECLIPSE_XML, "text/xml")}, format="multipart")
    assert denied.status_code == 403


def test_statistics_for_admins_and_data_managers(world, client):
    finished_job(world)
    stats = api(world["alice"]).get("/api/statistics/").json()
    assert stats["jobs"] == 1 and stats["jobs_finished"] == 1 and stats["jobs_failed"] == 0
    assert stats["per_template"] == [{"template": "ct-body-lungs", "jobs": 1, "finished": 1, "failed": 0}]
    assert stats["average_stage_seconds"]["processing"] >= 0 and stats["series_received"] >= 1
    assert sum(w["jobs"] for w in stats["per_week"]) == 1
    assert api(world["charlie"]).get("/api/statistics/").status_code == 403
    assert api(world["bob"]).get("/api/statistics/").status_code == 403  # a viewer manages nothing
    assert api(world["alice"]).get("/api/statistics/", {"weeks": "zero"}).status_code == 400
    client.force_login(world["alice"])
    page = client.get("/statistics/").content.decode()
    assert "Average time per stage" in page and "ct-body-lungs" in page and "Download ratings (CSV)" in page
    client.force_login(world["bob"])
    assert client.get("/statistics/").status_code == 403
