"""Web pages with a real DB and real imported files: login required, catalog browser, search,
series details (geometry, RT), study RT tree with approval and findings, imports, permissions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from dicomflow.catalog.analysis import analyse_studies
from dicomflow.catalog.models import Patient, Study
from dicomflow.intake.services import import_paths
from dicomflow.testing.synth import PatientSpec, write_rt_study

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def rt_study(tmp_path_factory):
    return write_rt_study(tmp_path_factory.mktemp("web") / "rt", PatientSpec("WEB-1", "Web^Wendy", "F", "19550505"),
                          n_slices=6, rows=32, cols=32, with_mr=False, skip_slices=(3,), seed="web")


@pytest.fixture
def imported(rt_study, tmp_path):
    (tmp_path / "notes.txt").write_text("not dicom")
    report = import_paths([rt_study.out_dir, tmp_path], workers=1, analyse=False)
    study = Study.objects.get(study_instance_uid=rt_study.study_uid)
    analyse_studies([study.pk], workers=1)
    return rt_study, report


PAGES = ["/", "/patients/", "/studies/", "/imports/", "/upload/"]


@pytest.mark.parametrize("url", PAGES)
def test_login_is_required(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"] == f"/login/?next={url}"


def test_home_counts_and_recent_imports(admin_client, imported):
    rt, report = imported
    html = admin_client.get("/").content.decode()
    assert f'id="df-count-series">{len(set(rt.series_uids))}<' in html
    assert f'id="df-count-instances">{report.instances_new}<' in html
    assert f'href="/imports/{report.import_run_id}/"' in html


def test_patients_search_and_patient_page(admin_client, imported):
    rt, _ = imported
    patient = Patient.objects.get(patient_id="WEB-1")
    html = admin_client.get("/patients/", {"q": "wendy"}).content.decode()
    assert "WEB-1" in html and f'href="/patients/{patient.pk}/"' in html
    assert "WEB-1" not in admin_client.get("/patients/", {"q": "nobody"}).content.decode()
    html = admin_client.get(f"/patients/{patient.pk}/").content.decode()
    assert f"/studies/{rt.study_uid}/" in html and "RTPLAN" in html
    html = admin_client.get("/studies/", {"date_from": "not a date"}).content.decode()
    assert "parameter date_from must be a date as YYYY-MM-DD" in html


def test_study_page_shows_rt_tree_approval_and_findings(admin_client, imported):
    rt, _ = imported
    html = admin_client.get(f"/studies/{rt.study_uid}/").content.decode()
    assert 'id="df-rt-tree"' in html
    tree = html[html.index('id="df-rt-tree"'):]
    # images first, then what references them: CT › RTSTRUCT › RTPLAN › RTDOSE
    order = [tree.index(f"/series/{uid}/") for uid in
             (rt.ct.series_uid, rt.rtstruct.series_uid, rt.approved_plan.series_uid, rt.dose_for(rt.approved_plan).series_uid)]
    assert order == sorted(order)
    assert "APPROVED" in tree and "UNAPPROVED" in tree
    assert "1 missing" in tree  # the skipped slice, from the stored completeness check


def test_series_page_geometry_rt_and_download_link(admin_client, imported):
    rt, _ = imported
    html = admin_client.get(f"/series/{rt.ct.series_uid}/").content.decode()
    assert 'id="df-matrix">32 × 32<' in html and f'id="df-slices">{len(rt.ct.paths)}<' in html
    assert f'/api/series/{rt.ct.series_uid}/download/' in html
    assert "incomplete" in html
    for uid in rt.ct.sop_instance_uids:
        assert uid in html
    html = admin_client.get(f"/series/{rt.rtstruct.series_uid}/").content.decode()
    for name in rt.rtstruct.roi_names:
        assert name in html
    assert admin_client.get("/series/1.2.3.4/").status_code == 404


def test_import_pages(admin_client, imported):
    _, report = imported
    assert f"/imports/{report.import_run_id}/" in admin_client.get("/imports/").content.decode()
    html = admin_client.get(f"/imports/{report.import_run_id}/").content.decode()
    assert f'id="df-new">{report.instances_new}<' in html and "notes.txt" in html


def test_users_without_access_see_nothing(client, imported, django_user_model):
    rt, _ = imported
    charlie = django_user_model.objects.create_user("charlie", password="pw-charlie-1")
    client.force_login(charlie)
    home = client.get("/").content.decode()
    assert 'id="df-count-patients">0<' in home
    assert 'href="/upload/"' not in home and 'href="/imports/"' not in home  # no links to pages she may not open
    assert "WEB-1" not in client.get("/patients/").content.decode()
    assert client.get(f"/series/{rt.ct.series_uid}/").status_code == 404
    assert client.get(f"/studies/{rt.study_uid}/").status_code == 404
    assert client.get("/imports/").status_code == 403
    assert client.get("/upload/").status_code == 403
    charlie.user_permissions.add(Permission.objects.get(codename="add_uploadsession"))
    assert client.get("/upload/").status_code == 200
    assert 'href="/upload/"' in client.get("/").content.decode()


def test_api_key_page_creates_shows_once_and_revokes(admin_client, admin_user):
    from rest_framework.test import APIClient

    from dicomflow.accounts.models import ApiKey

    assert "You have no API key yet" in admin_client.get("/token/").content.decode()
    html = admin_client.post("/token/", {"name": "laptop", "expires_in_days": "30"}).content.decode()
    row = ApiKey.objects.get(user=admin_user)
    key = html.split('id="df-token">')[1].split("<")[0]
    assert key.startswith(row.prefix + ".") and row.expiry_date is not None
    assert key not in admin_client.get("/token/").content.decode()  # shown once
    assert APIClient(HTTP_X_API_KEY=key).get("/api/patients/").status_code == 200
    admin_client.post("/token/", {"revoke": row.prefix})
    assert APIClient(HTTP_X_API_KEY=key).get("/api/patients/").status_code == 401
    assert "revoked" in admin_client.get("/token/").content.decode()


def test_styled_403_404_pages_and_favicon(client, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    client.force_login(user)
    missing = client.get("/patients/999999/")
    assert missing.status_code == 404 and "Not found" in missing.content.decode()
    assert 'id="df-user"' in missing.content.decode()  # the app's own layout, not a bare error
    refused = client.get("/imports/")
    assert refused.status_code == 403 and "Not allowed" in refused.content.decode()
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 301 and favicon["Location"].endswith("web/favicon.svg")
    assert client.get(favicon["Location"]).status_code == 200
