"""DICOMweb conformance against the live server with a client the project did not write
(``dicomweb-client``): STOW-RS of a CT + RTSTRUCT study, QIDO-RS by Patient ID and by a wildcard
name, WADO-RS of every instance byte-identical; scoping (a project member sees the project's
pseudonymized copy, never the clinical pool), 401 without a key, audited retrieves.
"""

from __future__ import annotations

import io

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from django.contrib.auth.models import Permission

from dicomflow.accounts.actors import cli_operator
from dicomflow.accounts.models import AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Instance, Study
from dicomflow.intake.models import ImportRun, SourceKind
from dicomflow.projects import services as project_services
from dicomflow.projects.models import Role
from dicomflow.testing import synth

pytestmark = pytest.mark.django_db(transaction=True)
OP = cli_operator()
PATIENT = synth.PatientSpec("DW-0001", "Webber^Wanda", "F", "19600202")


def grant(user, *codenames: str) -> None:
    for full in codenames:
        app, codename = full.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))


def client_for(live_server, key: str | None, root: str = "/dicomweb") -> DICOMwebClient:
    session = requests.Session()
    if key is not None:
        session.headers["X-Api-Key"] = key
    return DICOMwebClient(url=live_server.url + root, session=session)


def capture(client: DICOMwebClient) -> list[requests.Response]:
    """Every response the client receives (to look at the raw multipart bodies)."""
    seen: list[requests.Response] = []
    client._session.hooks["response"].append(lambda response, *a, **k: seen.append(response))
    return seen


def raw_parts(client: DICOMwebClient, response: requests.Response) -> list[bytes]:
    """The parts of a multipart response, split by the client's own decoder."""
    return list(client._decode_multipart_message(response, stream=False))


def write_study(tmp_path, patient=PATIENT, seed="dw"):
    ct = synth.write_image_series(tmp_path / "ct", patient=patient, n_slices=6, rows=32, cols=32, seed=seed)
    rs = synth.write_rtstruct(tmp_path / "rs", ct, seed=seed)
    return ct, rs, [*ct.paths, rs.path]


@pytest.fixture
def stan(django_user_model):
    """May store into and read the clinical pool (the permissions an intake operator holds)."""
    user = django_user_model.objects.create_user("stan")
    grant(user, "intake.add_uploadsession", "projects.view_clinical_pool")
    return user


def test_store_search_retrieve_byte_identical(live_server, stan, tmp_path):
    ct, rs, paths = write_study(tmp_path)
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes() for p in paths}
    client = client_for(live_server, create_api_key(stan, stan)[1])

    answer = client.store_instances([pydicom.dcmread(p) for p in paths])
    stored = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert stored == set(originals) and "FailedSOPSequence" not in answer
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{ct.study_uid}")
    assert all(item.RetrieveURL.endswith(f"/series/{ct.series_uid}/instances/{item.ReferencedSOPInstanceUID}")
               for item in answer.ReferencedSOPSequence if item.ReferencedSOPInstanceUID in ct.sop_instance_uids)
    run = ImportRun.objects.get(pk=ImportRun.objects.filter(source_kind=SourceKind.DICOMWEB).latest("pk").pk)
    assert (run.files_seen, run.instances_new) == (7, 7)
    # the stored bytes are what the client sent, which are the files written
    for inst in Instance.objects.filter(sop_instance_uid__in=originals):
        assert inst.size == len(originals[inst.sop_instance_uid])

    [by_id] = client.search_for_studies(search_filters={"PatientID": PATIENT.patient_id})
    found = pydicom.Dataset.from_json(by_id)
    assert found.StudyInstanceUID == ct.study_uid and str(found.PatientName) == "Webber^Wanda"
    assert set(found.ModalitiesInStudy) == {"CT", "RTSTRUCT"}
    assert (int(found.NumberOfStudyRelatedSeries), int(found.NumberOfStudyRelatedInstances)) == (2, 7)
    [by_name] = client.search_for_studies(search_filters={"PatientName": "webb*^W?nda"})
    assert pydicom.Dataset.from_json(by_name).StudyInstanceUID == ct.study_uid
    assert client.search_for_studies(search_filters={"PatientName": "Webb"}) == []  # no wildcard: whole value
    series = {pydicom.Dataset.from_json(s).Modality: pydicom.Dataset.from_json(s)
              for s in client.search_for_series(ct.study_uid)}
    assert set(series) == {"CT", "RTSTRUCT"} and int(series["CT"].NumberOfSeriesRelatedInstances) == 6
    listed = client.search_for_instances(ct.study_uid, ct.series_uid)
    assert [pydicom.Dataset.from_json(i).SOPInstanceUID for i in listed] == ct.sop_instance_uids

    seen = capture(client)
    for uid, data in originals.items():
        series_uid = ct.series_uid if uid in ct.sop_instance_uids else rs.series_uid
        ds = client.retrieve_instance(ct.study_uid, series_uid, uid)
        assert ds.SOPInstanceUID == uid
        [part] = raw_parts(client, seen[-1])
        assert part == data  # byte-identical: the stored file, not re-encoded
    datasets = client.retrieve_study(ct.study_uid)
    study_parts = raw_parts(client, seen[-1])
    assert len(datasets) == 7 and sorted(study_parts) == sorted(originals.values())
    assert [d.SOPInstanceUID for d in client.retrieve_series(ct.study_uid, ct.series_uid)] == ct.sop_instance_uids

    metadata = client.retrieve_series_metadata(ct.study_uid, ct.series_uid)
    assert len(metadata) == 6 and all("7FE00010" not in m for m in metadata)
    assert pydicom.Dataset.from_json(metadata[0]).PatientID == PATIENT.patient_id
    one = client.retrieve_instance_metadata(ct.study_uid, rs.series_uid, rs.sop_instance_uid)
    assert pydicom.Dataset.from_json(one).Modality == "RTSTRUCT"

    # frames (what OHIF's wadors rendering reads): the raw pixel bytes of uncompressed instances
    third = pydicom.dcmread(ct.paths[2])
    [frame] = client.retrieve_instance_frames(ct.study_uid, ct.series_uid, ct.sop_instance_uids[2], frame_numbers=[1])
    assert frame == third.PixelData
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance_frames(ct.study_uid, ct.series_uid, ct.sop_instance_uids[2], frame_numbers=[2])
    assert refused.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as refused:
        client.retrieve_instance_frames(ct.study_uid, rs.series_uid, rs.sop_instance_uid, frame_numbers=[1])
    assert refused.value.response.status_code == 404  # an RTSTRUCT has no pixel data

    entries = AuditEntry.objects.filter(action="wado_retrieve", username="stan")
    assert entries.count() == 7 + 2 + 2 + 1  # instances, study, series; metadata of a series and an instance
    assert all("clinical data (identifying)" in e.detail and ct.study_uid not in e.object + e.detail for e in entries)


def test_project_member_sees_the_copy_not_the_clinical_pool(live_server, stan, django_user_model, tmp_path):
    project = project_services.create_project("DWP", "dicomweb project")
    uma = django_user_model.objects.create_user("uma")  # uploader in DWP, no clinical pool permission
    project_services.add_member(OP, project, uma, Role.UPLOADER)
    vic = django_user_model.objects.create_user("vic")  # viewer in DWP
    project_services.add_member(OP, project, vic, Role.VIEWER)
    other = project_services.create_project("OTHER", "someone else's")
    ct, rs, paths = write_study(tmp_path)
    uma_key, vic_key = create_api_key(uma, uma)[1], create_api_key(vic, vic)[1]

    # uma stores into the project: the study goes to the clinical pool and is staged into DWP
    answer = client_for(live_server, uma_key, "/dicomweb/projects/DWP").store_instances(
        [pydicom.dcmread(p) for p in paths])
    assert len(answer.ReferencedSOPSequence) == 7 and "FailedSOPSequence" not in answer
    copy = Study.objects.get(project=project)
    assert copy.study_instance_uid != ct.study_uid and answer.RetrieveURL.endswith(
        f"/dicomweb/projects/DWP/studies/{copy.study_instance_uid}")
    assert Study.objects.filter(study_instance_uid=ct.study_uid, project__isnull=True).exists()

    for root in ("/dicomweb", "/dicomweb/projects/DWP"):
        viewer = client_for(live_server, vic_key, root)
        studies = [pydicom.Dataset.from_json(s) for s in viewer.search_for_studies()]
        assert [s.StudyInstanceUID for s in studies] == [copy.study_instance_uid]
        assert studies[0].PatientID != PATIENT.patient_id and "Webber" not in str(studies[0].PatientName)
        assert viewer.search_for_studies(search_filters={"PatientID": PATIENT.patient_id}) == []
        assert viewer.search_for_studies(search_filters={"StudyInstanceUID": ct.study_uid}) == []
        assert viewer.search_for_instances(search_filters={"SOPInstanceUID": ct.sop_instance_uids[0]}) == []
        copies = viewer.retrieve_study(copy.study_instance_uid)
        assert len(copies) == 7 and {str(d.PatientName) for d in copies} != {"Webber^Wanda"}
        assert all(PATIENT.patient_id not in d.PatientID for d in copies)
        with pytest.raises(requests.HTTPError) as refused:
            viewer.retrieve_study(ct.study_uid)  # the clinical original: not there for them
        assert refused.value.response.status_code == 404
        with pytest.raises(requests.HTTPError) as refused:
            viewer.retrieve_series_metadata(ct.study_uid, ct.series_uid)
        assert refused.value.response.status_code == 404
    [entry] = AuditEntry.objects.filter(action="wado_retrieve", username="vic", detail__contains="study retrieve")[:1]
    assert entry.project == "DWP" and "pseudonymized copy" in entry.detail

    # another project's root does not exist for them; a viewer may not store
    foreign = requests.get(f"{live_server.url}/dicomweb/projects/{other.key}/studies", headers={"X-Api-Key": vic_key})
    assert foreign.status_code == 404 and foreign.headers["Content-Type"] == "application/problem+json"
    with pytest.raises(requests.HTTPError) as refused:
        client_for(live_server, vic_key, "/dicomweb/projects/DWP").store_instances([pydicom.dcmread(paths[0])])
    assert refused.value.response.status_code == 403
    # without the clinical upload permission, the root refuses a store
    with pytest.raises(requests.HTTPError) as refused:
        client_for(live_server, uma_key).store_instances([pydicom.dcmread(paths[0])])
    assert refused.value.response.status_code == 403
    # the clinical pool's reader sees the original (and the copy, which is not theirs: not at all)
    stan_view = client_for(live_server, create_api_key(stan, stan)[1])
    assert [pydicom.Dataset.from_json(s).StudyInstanceUID for s in stan_view.search_for_studies()] == [ct.study_uid]


@pytest.mark.parametrize("method,path", [
    ("get", "/dicomweb/studies"), ("get", "/dicomweb/series"), ("get", "/dicomweb/instances"),
    ("get", "/dicomweb/studies/1.2.3"), ("get", "/dicomweb/studies/1.2.3/metadata"),
    ("post", "/dicomweb/studies"), ("get", "/dicomweb/projects/DWP/studies"),
])
def test_no_key_401_and_bad_key_401(live_server, method, path):
    response = requests.request(method, live_server.url + path, headers={"Content-Type": "multipart/related; boundary=x"},
                                data=b"")
    assert response.status_code == 401 and "X-Api-Key" in response.headers["WWW-Authenticate"]
    response = requests.request(method, live_server.url + path, headers={"X-Api-Key": "nope.nope"})
    assert response.status_code == 401


def test_dicomweb_client_without_key_gets_401(live_server):
    with pytest.raises(requests.HTTPError) as refused:
        client_for(live_server, None).search_for_studies()
    assert refused.value.response.status_code == 401


def _multipart(parts: list[tuple[str, bytes]], boundary="b0undary") -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {ct}\r\n\r\n".encode() + data + b"\r\n" for ct, data in parts)
    return body + f"--{boundary}--\r\n".encode()


def test_stow_refusals_are_reported_per_instance(live_server, stan, tmp_path):
    ct, rs, paths = write_study(tmp_path)
    key = create_api_key(stan, stan)[1]
    url = f"{live_server.url}/dicomweb/studies"
    headers = {"X-Api-Key": key, "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'}
    first = paths[0].read_bytes()
    changed = pydicom.dcmread(paths[0])
    changed.SeriesDescription = "changed bytes, same SOP Instance UID"
    buf = io.BytesIO()
    changed.save_as(buf, enforce_file_format=True)

    ok = requests.post(url, headers=headers, data=_multipart([("application/dicom", first)]))
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/dicom+json"
    body = _multipart([("application/dicom", first),  # duplicate: same bytes, fine
                       ("application/dicom", b"this is not DICOM at all"),
                       ("application/dicom", buf.getvalue()),  # conflict: stored copy kept
                       ("application/dicom", paths[1].read_bytes())])
    mixed = requests.post(url, headers=headers, data=body)
    assert mixed.status_code == 202, mixed.text
    answer = pydicom.Dataset.from_json(mixed.json())
    assert {str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence} == set(ct.sop_instance_uids[:2])
    failed = {int(f.FailureReason): f for f in answer.FailedSOPSequence}
    assert set(failed) == {0xC000, 0x0111}
    assert failed[0x0111].ReferencedSOPInstanceUID == ct.sop_instance_uids[0]
    assert "different content" in failed[0x0111][0x00000902].value
    assert failed[0xC000][0x00000902].value.startswith("part 2:")
    assert Instance.objects.get(sop_instance_uid=ct.sop_instance_uids[0]).size == len(first)  # kept

    # a store naming a study refuses instances of another study
    other = synth.write_image_series(tmp_path / "other", patient=PATIENT, n_slices=1, rows=16, cols=16, seed="o")
    wrong = requests.post(f"{url}/{ct.study_uid}", headers=headers,
                          data=_multipart([("application/dicom", other.paths[0].read_bytes())]))
    assert wrong.status_code == 409
    assert int(pydicom.Dataset.from_json(wrong.json()).FailedSOPSequence[0].FailureReason) == 0xA900
    assert not Instance.objects.filter(sop_instance_uid=other.sop_instance_uids[0]).exists()

    cut = requests.post(url, headers=headers, data=_multipart([("application/dicom", paths[2].read_bytes())])[:-40])
    assert cut.status_code == 400 and "closing boundary" in cut.json()["detail"]
    wrong_type = requests.post(url, headers={"X-Api-Key": key, "Content-Type": "application/dicom"}, data=first)
    assert wrong_type.status_code == 415
    json_parts = requests.post(url, headers={**headers, "Content-Type": 'multipart/related; type="application/dicom+json"; '
                                             "boundary=b0undary"}, data=_multipart([("application/dicom+json", b"[]")]))
    assert json_parts.status_code == 415


def test_stow_size_limit(live_server, stan, tmp_path, settings):
    settings.DICOMFLOW_UPLOAD_MAX_BYTES = 2000
    ct, rs, paths = write_study(tmp_path)
    response = requests.post(f"{live_server.url}/dicomweb/studies", data=_multipart([("application/dicom", paths[0].read_bytes())]),
                             headers={"X-Api-Key": create_api_key(stan, stan)[1],
                                      "Content-Type": "multipart/related; type=application/dicom; boundary=b0undary"})
    assert response.status_code == 413 and not Instance.objects.exists()


def test_qido_matching_paging_includefield(live_server, stan, tmp_path):
    key = create_api_key(stan, stan)[1]
    client = client_for(live_server, key)
    for n, (date, acc) in enumerate([("20200105", "ACC-1"), ("20210310", "ACC-2"), ("20220720", "ACC-3")]):
        patient = synth.PatientSpec(f"DWQ-{n}", f"Query^Q{n}", "M", "19700101")
        series = synth.write_image_series(tmp_path / str(n), patient=patient, n_slices=2, rows=16, cols=16, seed=f"q{n}",
                                          modality="MR" if n == 2 else "CT",
                                          extra={"StudyDate": date, "AccessionNumber": acc, "SeriesDate": date})
        client.store_instances([pydicom.dcmread(p) for p in series.paths])

    def ids(**filters):
        return sorted(pydicom.Dataset.from_json(s).PatientID for s in client.search_for_studies(search_filters=filters))

    assert ids() == ["DWQ-0", "DWQ-1", "DWQ-2"]
    assert ids(StudyDate="20210101-") == ["DWQ-1", "DWQ-2"]
    assert ids(StudyDate="-20210310") == ["DWQ-0", "DWQ-1"]
    assert ids(StudyDate="20200105") == ["DWQ-0"]
    assert ids(ModalitiesInStudy="MR") == ["DWQ-2"]
    assert ids(AccessionNumber="ACC-2") == ["DWQ-1"]
    assert ids(PatientName="query^q?") == ["DWQ-0", "DWQ-1", "DWQ-2"]
    assert ids(PatientID="DWQ-*") == ["DWQ-0", "DWQ-1", "DWQ-2"]
    page = client.search_for_studies(limit=2, offset=1)
    assert len(page) == 2
    everything = client.search_for_studies()
    assert [s["0020000D"] for s in page] == [s["0020000D"] for s in everything[1:3]]
    # tags as keys; includefield adds what the catalog holds; unknown keys are a 400
    r = requests.get(f"{live_server.url}/dicomweb/series?00080060=MR&includefield=BodyPartExamined,00080021",
                     headers={"X-Api-Key": key})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/dicom+json"
    [mr] = r.json()
    assert mr["00080060"]["Value"] == ["MR"] and "00180015" in mr and mr["00080021"]["Value"] == ["20220720"]
    # what OHIF's study list sends: empty and "*" keys match everything and are returned
    r = requests.get(f"{live_server.url}/dicomweb/studies?limit=101&offset=0&fuzzymatching=false"
                     "&includefield=00081030%2C00080060&StudyDate=&PatientName=*&SeriesNumber=",
                     headers={"X-Api-Key": key})
    assert r.status_code == 200 and len(r.json()) == 3 and all("00081030" in d for d in r.json()), r.text
    r = requests.get(f"{live_server.url}/dicomweb/studies?NoSuchAttribute=1", headers={"X-Api-Key": key})
    assert r.status_code == 400 and "NoSuchAttribute" in r.json()["detail"]
    r = requests.get(f"{live_server.url}/dicomweb/studies?StudyDate=yesterday", headers={"X-Api-Key": key})
    assert r.status_code == 400
    r = requests.get(f"{live_server.url}/dicomweb/studies?limit=1", headers={"X-Api-Key": key})
    assert "2 additional results" in r.headers["Warning"]
    r = requests.get(f"{live_server.url}/dicomweb/studies?ReferringPhysicianName=X", headers={"X-Api-Key": key})
    assert r.status_code == 200 and "not supported" in r.headers["Warning"] and len(r.json()) == 3
    r = requests.get(f"{live_server.url}/dicomweb/studies", headers={"X-Api-Key": key, "Accept": "application/dicom+xml"})
    assert r.status_code == 406


def test_browser_session_and_transfer_syntax_negotiation(client, stan, tmp_path):
    """The login session works like a key (what a same-origin viewer uses); WADO-RS never transcodes."""
    ct, rs, paths = write_study(tmp_path)
    from dicomflow.intake.services import import_paths

    import_paths(paths)
    assert client.get("/dicomweb/studies").status_code == 401
    client.force_login(stan)
    [study] = client.get("/dicomweb/studies", {"PatientID": PATIENT.patient_id}).json()
    assert study["0020000D"]["Value"] == [ct.study_uid]
    url = f"/dicomweb/studies/{ct.study_uid}/series/{ct.series_uid}"
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    ok = client.get(url, HTTP_ACCEPT=explicit)
    assert ok.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1" in b"".join(ok.streaming_content)
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    refused = client.get(url, HTTP_ACCEPT=jpeg)
    assert refused.status_code == 406 and "does not transcode" in refused.json()["detail"]
    assert client.get(url, HTTP_ACCEPT="application/dicom+json").status_code == 406
    assert client.get(url + "/metadata", HTTP_ACCEPT="application/dicom+xml").status_code == 406
    # a session POST needs the CSRF token like every session write
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(stan)
    posted = strict.post("/dicomweb/studies", data=b"", content_type="multipart/related; boundary=x")
    assert posted.status_code == 403 and "CSRF" in posted.json()["detail"]
