"""REST API catalog reads with a real DB and real imported files: filters, details, ZIP download,
permissions (anonymous refused, per-project visibility), clear errors, a valid OpenAPI schema."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import zipfile

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from rest_framework.test import APIClient

from dicomflow.catalog.models import Instance, Study
from dicomflow.intake.services import import_paths
from dicomflow.testing.synth import PatientSpec, write_image_series, write_rt_study

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    rt = write_rt_study(root / "rt", PatientSpec("API-RT-1", "Alpha^Ann", "F", "19600101"), n_slices=6,
                        rows=32, cols=32, with_mr=False, seed="api-rt")
    mr = write_image_series(root / "mr", PatientSpec("API-MR-2", "Beta^Bob", "M", "19700202"), modality="MR",
                            n_slices=4, rows=24, cols=20, pixel_spacing=(1.5, 1.25), slice_thickness=3.0,
                            seed="api-mr")
    return {"root": root, "rt": rt, "mr": mr}


@pytest.fixture
def imported(data):
    report = import_paths([data["root"]], analyse=False, workers=1)
    assert report.instances_new == len(data["rt"].paths) + len(data["mr"].paths)
    return data


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


ENDPOINTS = ["/api/patients/", "/api/studies/", "/api/series/", "/api/instances/", "/api/imports/", "/api/uploads/"]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_anonymous_is_refused_with_401_problem_details(url, imported):
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 401 and "credentials" in body["detail"].lower() and body["title"]
    assert "X-Api-Key" in response["WWW-Authenticate"]


def test_api_key_and_session_authentication(imported, admin_user, client):
    response = APIClient().post("/api/auth/token/", {"username": "admin", "password": "password"})
    assert response.status_code == 201
    key = response.json()["key"]
    from dicomflow.accounts.models import ApiKey

    row = ApiKey.objects.get(prefix=key.split(".")[0])
    assert key not in (row.id, row.hashed_key) and key.split(".")[1] not in row.hashed_key  # stored hashed
    by_key = APIClient(HTTP_X_API_KEY=key)
    assert len(results(by_key.get("/api/patients/"))) == 2
    basic = APIClient()  # HTTP basic is no longer accepted: passwords do not travel with every call
    basic.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"admin:password").decode())
    assert basic.get("/api/patients/").status_code == 401
    client.force_login(admin_user)
    assert client.get("/api/patients/").status_code == 200
    assert APIClient(HTTP_X_API_KEY="wrong.key").get("/api/patients/").status_code == 401
    assert APIClient().post("/api/auth/token/", {"username": "admin", "password": "nope"}).status_code == 401
    from dicomflow.accounts.services import revoke_api_key

    revoke_api_key(admin_user, row.prefix)
    assert by_key.get("/api/patients/").status_code == 401


def test_patient_filters(api, imported):
    all_patients = results(api.get("/api/patients/"))
    assert sorted(p["patient_id"] for p in all_patients) == ["API-MR-2", "API-RT-1"]
    one = results(api.get("/api/patients/", {"patient_id": "API-RT-1"}))
    assert len(one) == 1 and one[0]["patient_name"] == "Alpha^Ann" and one[0]["study_count"] == 1
    assert [p["patient_id"] for p in results(api.get("/api/patients/", {"name": "beta"}))] == ["API-MR-2"]
    assert results(api.get("/api/patients/", {"patient_id": "nobody"})) == []
    detail = api.get(f"/api/patients/{one[0]['id']}/").json()
    assert detail["patient_id"] == "API-RT-1"


def test_study_and_series_filters(api, imported):
    rt, mr = imported["rt"], imported["mr"]
    studies = results(api.get("/api/studies/", {"patient_id": "API-RT-1"}))
    assert [s["study_instance_uid"] for s in studies] == [rt.study_uid]
    assert studies[0]["series_count"] == len(set(rt.series_uids))
    assert [s["study_instance_uid"] for s in results(api.get("/api/studies/", {"modality": "mr"}))] == [mr.study_uid]
    date = Study.objects.get(study_instance_uid=rt.study_uid).study_date
    assert date is not None
    day = dt.timedelta(days=1)
    assert len(results(api.get("/api/studies/", {"date_from": str(date), "date_to": str(date)}))) == 2
    assert results(api.get("/api/studies/", {"date_from": str(date + day)})) == []
    assert results(api.get("/api/studies/", {"date_to": str(date - day)})) == []

    rtplans = results(api.get("/api/series/", {"study_uid": rt.study_uid, "modality": "RTPLAN"}))
    assert sorted(s["series_instance_uid"] for s in rtplans) == sorted(p.series_uid for p in rt.plans)
    ct = results(api.get("/api/series/", {"series_uid": rt.ct.series_uid}))
    assert ct[0]["instance_count"] == len(rt.ct.paths) and ct[0]["modality"] == "CT"
    instances = results(api.get("/api/instances/", {"series_uid": mr.series_uid}))
    assert sorted(i["sop_instance_uid"] for i in instances) == sorted(mr.sop_instance_uids)
    assert instances[0]["image"]["rows"] == 24 and instances[0]["image"]["columns"] == 20


def test_bad_parameters_give_clear_json_errors(api, imported):
    response = api.get("/api/studies/", {"date_from": "01/02/2020"})
    assert response.status_code == 400
    assert response.json().items() >= {"detail": "parameter date_from must be a date as YYYY-MM-DD",
                                       "code": "InputError", "status": 400}.items()
    assert response["Content-Type"].startswith("application/problem+json")
    response = api.get("/api/series/1.2.3.4.5/")
    assert response.status_code == 404 and "detail" in response.json()


def test_series_detail_image_geometry_and_rt(api, imported):
    rt, mr = imported["rt"], imported["mr"]
    detail = api.get(f"/api/series/{mr.series_uid}/").json()
    image = detail["image"]
    assert (image["rows"], image["columns"], image["slices"]) == (24, 20, 4)
    assert image["pixel_spacing"] == [1.5, 1.25] and image["slice_thickness"] == 3.0
    extent = image["extent_mm"]
    along = sorted(float(sum(n * x for n, x in zip(mr.normal, p))) for p in mr.positions)
    assert extent == pytest.approx([along[0], along[-1]], abs=1e-3) and along[-1] - along[0] > 0
    assert detail["rt"] == {}

    structure = api.get(f"/api/series/{rt.rtstruct.series_uid}/").json()
    assert structure["image"] is None
    sets = structure["rt"]["structure_sets"]
    assert [r["name"] for r in sets[0]["rois"]] == rt.rtstruct.roi_names
    assert sets[0]["referenced_series_uid"] == rt.ct.series_uid
    plan = api.get(f"/api/series/{rt.approved_plan.series_uid}/").json()["rt"]["plans"][0]
    assert plan["approval_status"] == "APPROVED" and plan["beams"] == len(rt.approved_plan.beam_numbers)
    dose = api.get(f"/api/series/{rt.doses[0].series_uid}/").json()["rt"]["doses"][0]
    assert dose["referenced_plan_uid"] == rt.doses[0].referenced_sop_instance_uids[0]


def test_series_download_streams_the_stored_files_as_a_zip(api, imported):
    ct = imported["rt"].ct
    response = api.get(f"/api/series/{ct.series_uid}/download/", HTTP_ACCEPT="application/zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response.streaming
    body = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    originals = {hashlib.sha256(p.read_bytes()).hexdigest() for p in ct.paths}
    assert len(members) == len(ct.paths)
    assert {hashlib.sha256(b).hexdigest() for b in members.values()} == originals
    assert set(members) == {f"{uid}.dcm" for uid in ct.sop_instance_uids}


def test_visibility_follows_the_clinical_pool_permission(imported, django_user_model):
    rt = imported["rt"]
    charlie = django_user_model.objects.create_user("charlie", password="pw-charlie-1")
    client = APIClient()
    client.force_authenticate(charlie)
    assert results(client.get("/api/patients/")) == []
    assert results(client.get("/api/series/")) == []
    assert client.get(f"/api/series/{rt.ct.series_uid}/").status_code == 404
    assert client.get(f"/api/series/{rt.ct.series_uid}/download/").status_code == 404
    assert client.get("/api/imports/").status_code == 403

    charlie.user_permissions.add(Permission.objects.get(codename="view_clinical_pool"),
                                 Permission.objects.get(codename="view_importrun"))
    charlie = django_user_model.objects.get(pk=charlie.pk)
    client.force_authenticate(charlie)
    assert len(results(client.get("/api/patients/"))) == 2
    assert client.get(f"/api/series/{rt.ct.series_uid}/").status_code == 200
    assert len(results(client.get("/api/imports/"))) >= 1


def test_imports_list_and_detail(api, imported, tmp_path):
    (tmp_path / "readme.txt").write_text("not dicom")
    report = import_paths([tmp_path], analyse=False, workers=1)
    runs = results(api.get("/api/imports/"))
    assert runs[0]["id"] == report.import_run_id and runs[0]["ignored"] == 1
    assert runs[1]["instances_new"] == Instance.objects.count()
    detail = api.get(f"/api/imports/{report.import_run_id}/").json()
    assert detail["ignored"][0]["path"].endswith("readme.txt") and detail["ignored"][0]["reason"]
    assert results(api.get("/api/imports/", {"source_kind": "watched_folder"})) == []


def test_openapi_schema_is_valid_without_warnings(api, tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in ("/api/uploads/{id}/files/{index}/", "/api/series/{series_instance_uid}/download/",
                 "/api/studies/{study_instance_uid}/rt-tree/", "/api/imports/"):
        assert path in text
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/patients/" in response.json()["paths"]


def test_instance_detail_and_study_rt_tree(api, imported):
    from dicomflow.catalog.analysis import analyse_studies

    rt = imported["rt"]
    uid = rt.ct.sop_instance_uids[0]
    detail = api.get(f"/api/instances/{uid}/").json()
    assert detail["series_instance_uid"] == rt.ct.series_uid
    assert detail["sha256"] == hashlib.sha256(rt.ct.paths[0].read_bytes()).hexdigest()

    study = Study.objects.get(study_instance_uid=rt.study_uid)
    assert api.get(f"/api/studies/{rt.study_uid}/rt-tree/").json()["analysed"] is False
    analyse_studies([study.pk], workers=1)
    tree = api.get(f"/api/studies/{rt.study_uid}/rt-tree/").json()
    assert tree["analysed"] is True
    nodes = {n["uid"]: n for n in tree["tree"]}
    assert nodes[rt.rtstruct.series_uid]["references"] == [rt.ct.series_uid]
    assert nodes[rt.approved_plan.series_uid]["approval_status"] == "APPROVED"
    assert {c["uid"] for c in tree["checks"]} == set(nodes)
    assert {a["uid"]: a["approval_status"] for a in tree["approval"]}[rt.unapproved_plan.series_uid] == "UNAPPROVED"


def test_download_refuses_when_the_store_lost_a_file(api, imported):
    from django.conf import settings

    mr = imported["mr"]
    inst = Instance.objects.filter(series__series_instance_uid=mr.series_uid).first()
    (settings.STORE_DIR / inst.stored_path).unlink()
    response = api.get(f"/api/series/{mr.series_uid}/download/")
    assert response.status_code == 500
    assert response.json().items() >= {
        "detail": "1 file(s) of this series are missing from the file store; an administrator should restore "
                  "them or import the series again",
        "code": "StorageError",
    }.items()
