"""Upload quotas and the free-space check (issue 14): five 20 GiB sessions used to be accepted.

Per user and in total, uploads in progress (resumable sessions not yet imported, ZIP uploads not
yet imported) may hold at most the configured bytes; a session that would leave less than the
reserve free on the upload file system is refused — with 413 / 507 problem details, an SDK
``ApiError`` and a clear page message for ZIP uploads.
"""

from __future__ import annotations

import shutil

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from dicomflow.intake import resumable
from dicomflow.intake.models import UploadSession, ZipUpload

GiB = 1024**3


@pytest.fixture
def quota(settings):
    settings.DICOMFLOW_UPLOAD_MAX_BYTES = 20 * GiB
    settings.DICOMFLOW_UPLOAD_QUOTA_USER = 50 * GiB
    settings.DICOMFLOW_UPLOAD_QUOTA_TOTAL = 70 * GiB
    settings.DICOMFLOW_UPLOAD_RESERVE = 0
    return settings


@pytest.fixture
def huge_disk(monkeypatch):
    """The disk is ample (a real 20 GiB × 5 test cannot assume 100 GiB free): the quota decides."""
    monkeypatch.setattr(resumable, "_free", lambda path: 10**15)


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _declare(client, size: int):
    return client.post("/api/uploads/", {"files": [{"name": "big.zip", "size": size}]}, format="json")


@pytest.mark.django_db
def test_five_20_gib_sessions_stop_at_the_users_quota_and_the_servers(admin_user, django_user_model, quota, huge_disk):
    alice = _client(admin_user)
    codes = [_declare(alice, 20 * GiB).status_code for _ in range(5)]
    assert codes == [201, 201, 413, 413, 413]  # 50 GiB per user: the third would hold 60
    refused = _declare(alice, 20 * GiB)
    body = refused.json()
    assert refused["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 413 and body["title"] == "Content too large"
    assert "each user may have at most 53687091200 bytes in progress" in body["detail"]

    bob_user = django_user_model.objects.create_superuser("bob", "bob@example.org", "pw-bob-123456")
    bob = _client(bob_user)
    assert _declare(bob, 20 * GiB).status_code == 201  # 60 GiB held in total
    total = _declare(bob, 20 * GiB)  # 80 > 70 GiB for the whole server
    assert total.status_code == 413 and "server's uploads in progress" in total.json()["detail"]

    first = UploadSession.objects.filter(owner=admin_user).order_by("created_at").first()
    assert alice.delete(f"/api/uploads/{first.pk}/").status_code in (200, 204)  # cancelled: its bytes are free again
    assert _declare(alice, 10 * GiB).status_code == 201


@pytest.mark.django_db
def test_a_session_that_would_eat_into_the_reserve_gets_507(admin_user, settings):
    """The real free space (shutil.disk_usage of the upload folder): a reserve larger than what is
    free refuses even a small upload; the sessions accepted earlier still count against it."""
    settings.DICOMFLOW_UPLOAD_QUOTA_USER = settings.DICOMFLOW_UPLOAD_QUOTA_TOTAL = 10**15
    settings.DICOMFLOW_UPLOAD_MAX_BYTES = 10**15
    free = shutil.disk_usage(settings.UPLOAD_DIR).free
    settings.DICOMFLOW_UPLOAD_RESERVE = free + 1
    client = _client(admin_user)
    refused = _declare(client, 1000)
    assert refused.status_code == 507
    body = refused.json()
    assert body["title"] == "Insufficient storage" and "not enough free disk space" in body["detail"]
    assert UploadSession.objects.count() == 0

    settings.DICOMFLOW_UPLOAD_RESERVE = 0
    big = free // 3  # counts twice (upload + its import into the store on the same disk): two thirds
    assert _declare(client, big).status_code == 201
    # alone it would fit (2 × free/2), but the first session's bytes have yet to arrive
    assert _declare(client, free // 2).status_code == 507


@pytest.mark.django_db(transaction=True)
def test_sdk_gets_a_clear_api_error(live_server, admin_user, quota, huge_disk, tmp_path):
    from dicomflow.accounts.services import create_api_key
    from dicomflow.sdk import ApiError, Client

    quota.DICOMFLOW_UPLOAD_QUOTA_USER = 100  # bytes
    data = tmp_path / "file.dcm"
    data.write_bytes(b"\0" * 200)
    key = create_api_key(admin_user, admin_user, name="quota")[1]
    with Client(live_server.url, api_key=key) as client, pytest.raises(ApiError) as caught:
        client.upload(data)
    assert caught.value.status == 413
    assert "each user may have at most 100 bytes in progress" in caught.value.detail


@pytest.mark.django_db
def test_zip_uploads_count_against_the_quota(admin_user, quota, huge_disk):
    from dicomflow.errors import UploadError
    from dicomflow.intake.uploads import upload_zips

    quota.DICOMFLOW_UPLOAD_QUOTA_USER = 1000
    made = upload_zips(admin_user, [SimpleUploadedFile("a.zip", b"x" * 600)])
    assert len(made) == 1 and ZipUpload.objects.count() == 1
    with pytest.raises(resumable.UploadQuotaError) as caught:
        upload_zips(admin_user, [SimpleUploadedFile("b.zip", b"x" * 600)])
    assert isinstance(caught.value, UploadError) and "at most 1000 bytes" in str(caught.value)
    assert ZipUpload.objects.count() == 1
    # a resumable session sees the pending ZIP too
    with pytest.raises(resumable.UploadQuotaError):
        resumable.create_session([{"name": "c", "size": 600}], owner=admin_user)
