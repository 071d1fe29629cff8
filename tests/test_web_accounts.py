"""The web app's own login for every user (not only staff), logout, password change, the expired
session that brings the user back, failed logins in the audit log, and the audit page for admins.

Personas: alice (data manager of project A, not staff), charlie (no project), an admin (superuser).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.utils import timezone

from dicomflow.accounts import audit
from dicomflow.accounts.models import ApiKey, AuditAction, AuditEntry
from dicomflow.accounts.services import create_api_key
from dicomflow.projects.models import ProjectMembership, Role
from dicomflow.projects.services import create_project

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


@pytest.fixture
def alice(django_user_model):
    user = django_user_model.objects.create_user("alice", password=PASSWORD)
    ProjectMembership.objects.create(project=create_project("web-a", "A"), user=user, role=Role.DATA_MANAGER)
    user.user_permissions.add(Permission.objects.get(codename="add_uploadsession"))
    return user


@pytest.fixture
def charlie(django_user_model):
    return django_user_model.objects.create_user("charlie", password=PASSWORD)


def log_in(client, username: str, password: str = PASSWORD, next_url: str | None = None):
    data = {"username": username, "password": password} | ({"next": next_url} if next_url is not None else {})
    return client.post("/login/", data)


def test_login_page_is_a_plain_form_styled_like_the_app(client):
    html = client.get("/login/").content.decode()
    assert 'name="username"' in html and 'name="password"' in html and 'type="password"' in html
    assert "web/dicomflow.css" in html and "Log out" not in html and 'href="/patients/"' not in html


def test_a_member_who_is_not_staff_logs_in_and_uses_the_pages(client, alice):
    assert not alice.is_staff
    response = client.get("/studies/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/studies/"
    response = log_in(client, "alice", next_url="/studies/")
    assert response.status_code == 302 and response["Location"] == "/studies/"
    for url in ("/", "/patients/", "/studies/", "/upload/", "/token/", "/password/"):
        assert client.get(url).status_code == 200, url
    html = client.get("/").content.decode()
    assert '<a id="df-user" href="/password/"' in html and ">alice</a>" in html
    assert 'action="/logout/"' in html and 'id="df-logout"' in html and 'href="/token/"' in html
    assert 'href="/audit/"' not in html and 'href="/admin/"' not in html
    assert client.get("/audit/").status_code == 403
    assert client.get("/admin/").status_code == 302  # the admin stays for staff


def test_wrong_passwords_are_audited_once_each_without_the_password_or_a_guessed_name(client, alice):
    response = log_in(client, "alice", "not-her-password")
    assert response.status_code == 200 and 'id="df-login-error"' in response.content.decode()
    response = log_in(client, "Mustermann^Max", "guess-1234")
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    entries = list(AuditEntry.objects.filter(action=AuditAction.LOGIN_FAILED).order_by("id"))
    assert [(e.username, e.object, e.outcome) for e in entries] == [
        ("alice", f"user #{alice.pk}", "denied"), ("(unknown user)", "", "denied")]
    stored = " ".join(f"{e.username} {e.object} {e.detail}" for e in AuditEntry.objects.all())
    for secret in ("not-her-password", "guess-1234", "Mustermann"):
        assert secret not in stored
    assert log_in(client, "alice").status_code == 302
    assert AuditEntry.objects.filter(action=AuditAction.LOGIN_FAILED).count() == 2  # success adds none


def test_an_expired_session_sends_the_user_to_log_in_and_back(client, alice):
    log_in(client, "alice")
    assert client.get("/studies/").status_code == 200
    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/studies/", {"modality": "CT"})
    assert response.status_code == 302 and response["Location"] == "/login/?next=/studies/%3Fmodality%3DCT"
    page = client.get(response["Location"]).content.decode()
    assert 'name="next" value="/studies/?modality=CT"' in page
    response = log_in(client, "alice", next_url="/studies/?modality=CT")
    assert response.status_code == 302 and response["Location"] == "/studies/?modality=CT"


@pytest.mark.parametrize("bad", ["https://evil.example/", "//evil.example/studies/", "http://testserver.evil/"])
def test_a_next_on_another_host_is_ignored(client, alice, bad):
    page = client.get("/login/", {"next": bad}).content.decode()
    assert "evil" not in page
    response = log_in(client, "alice", next_url=bad)
    assert response.status_code == 302 and response["Location"] == "/"


def test_logout_is_a_post_and_ends_the_session(client, alice):
    log_in(client, "alice")
    assert client.get("/logout/").status_code == 405  # a link or a prefetch logs nobody out
    assert client.get("/").status_code == 200
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_password_change(client, alice, django_user_model):
    assert client.get("/password/").status_code == 302  # login first
    log_in(client, "alice")
    response = client.post("/password/", {"old_password": "wrong", "new_password1": "a new secret 42",
                                          "new_password2": "a new secret 42"})
    assert response.status_code == 200 and "incorrectly" in response.content.decode()
    response = client.post("/password/", {"old_password": PASSWORD, "new_password1": "a new secret 42",
                                          "new_password2": "a new secret 42"})
    assert response.status_code == 302 and response["Location"] == "/password/done/"
    assert 'id="df-password-changed"' in client.get("/password/done/").content.decode()
    assert client.get("/").status_code == 200  # this session stays logged in
    client.post("/logout/")
    assert log_in(client, "alice").status_code == 200  # the old password no longer works
    assert log_in(client, "alice", "a new secret 42").status_code == 302


def test_the_audit_page_is_for_administrators(client, alice, charlie, admin_user):
    assert client.get("/audit/")["Location"] == "/login/?next=/audit/"
    for user in (alice, charlie):
        client.force_login(user)
        refused = client.get("/audit/")
        assert refused.status_code == 403 and "Not allowed" in refused.content.decode()
    charlie.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    client.force_login(charlie)  # an auditor who is not a superuser
    assert client.get("/audit/").status_code == 200
    client.force_login(admin_user)
    html = client.get("/").content.decode()
    assert 'href="/audit/"' in html and 'href="/admin/"' in html


def test_the_audit_page_lists_filters_and_pages(admin_client, alice):
    for i in range(55):
        audit.record(alice, AuditAction.SERIES_DOWNLOAD, project="web-a", obj=f"series #{i}")
    audit.record(alice, AuditAction.STAGE, project="web-b", obj="study #7", detail="3 series staged")
    audit.denied(alice, AuditAction.REIDENTIFY, project="web-a", obj="subject #2")
    html = admin_client.get("/audit/").content.decode()
    assert "Page 1 of 2 · 57 in all" in html and "subject #2" in html and "Re-identification" in html
    assert "series #54" in html and "series #0<" not in html
    assert "series #0<" in admin_client.get("/audit/", {"page": 2}).content.decode()
    html = admin_client.get("/audit/", {"action": "stage"}).content.decode()
    assert "study #7" in html and "3 series staged" in html and "series #1<" not in html and "1 in all" in html
    html = admin_client.get("/audit/", {"project": "web-a", "action": "reidentify"}).content.decode()
    assert "subject #2" in html and "Denied" in html and "1 in all" in html
    assert "0 in all" in admin_client.get("/audit/", {"user": "charlie"}).content.decode()
    assert "57 in all" in admin_client.get("/audit/", {"user": "alice"}).content.decode()


def test_audit_admin_is_read_only_and_api_keys_can_only_be_revoked(admin_client, admin_user, alice):
    entry = audit.record(alice, AuditAction.EXPORT, project="web-a", obj="job #1")
    assert admin_client.get("/admin/accounts/auditentry/").status_code == 200
    assert admin_client.get("/admin/accounts/auditentry/add/").status_code == 403
    page = admin_client.get(f"/admin/accounts/auditentry/{entry.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(f"/admin/accounts/auditentry/{entry.pk}/delete/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()

    row, _ = create_api_key(alice, alice, name="laptop")
    assert admin_client.get("/admin/accounts/apikey/add/").status_code == 403
    page = admin_client.get(f"/admin/accounts/apikey/{row.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    listing = admin_client.get("/admin/accounts/apikey/").content.decode()
    assert 'value="revoke"' in listing and 'value="delete_selected"' not in listing
    response = admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [row.pk]})
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=row.pk).revoked
    revoked = AuditEntry.objects.filter(action=AuditAction.API_KEY, detail="revoked").get()
    assert revoked.username == admin_user.username and revoked.object == f"API key {row.prefix}"
