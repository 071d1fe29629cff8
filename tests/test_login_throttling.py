"""Login throttling and password rules (issue 14, item 8): wrong passwords and keys lock a user name
and an address out (the right password is then refused too until the lockout ends), weak passwords
are refused, sessions end after hours idle, and the first admin must replace the generated password,
which then leaves the disk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient

from dicomflow.accounts import bootstrap
from dicomflow.accounts.services import create_api_key, create_user
from dicomflow.accounts.actors import cli_operator
from dicomflow.errors import InputError

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
LIMIT = 5


@pytest.fixture(autouse=True)
def short_lockout(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=10)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; not what is tested


def lockout_ends() -> None:
    """The lockout time passes (the failures are dated back beyond it)."""
    from axes.models import AccessAttempt, AccessAttemptExpiration

    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(hours=1))
    AccessAttemptExpiration.objects.update(expires_at=F("expires_at") - timedelta(hours=1))


@pytest.fixture
def alice(django_user_model):
    user = django_user_model.objects.create_user("alice", password=PASSWORD)
    user.user_permissions.add(Permission.objects.get(codename="add_uploadsession"))
    return user


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password=PASSWORD)


def test_wrong_passwords_on_the_login_page_lock_the_account_even_for_the_right_password(client, alice):
    for _ in range(LIMIT - 1):
        assert client.post("/login/", {"username": "alice", "password": "guess-1234"}).status_code == 200
    locked = client.post("/login/", {"username": "alice", "password": "guess-5678"})
    assert locked.status_code == 429 and "Too many failed login attempts" in locked.content.decode()
    right = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    assert "Too many failed login attempts" in right.content.decode() and right["Retry-After"]
    lockout_ends()
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_one_address_guessing_many_user_names_is_locked_out_and_others_are_not(client, alice):
    for i in range(LIMIT):
        client.post("/login/", {"username": f"nobody{i}", "password": "guess-1234"})
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 429
    other = client.__class__(REMOTE_ADDR="10.1.2.3")
    assert other.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302


def test_admin_login_is_throttled(client, root):
    for _ in range(LIMIT):
        client.post("/admin/login/", {"username": "root", "password": "guess-1234", "next": "/admin/"})
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 429 and "Too many failed login attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_token_endpoint_is_throttled_with_a_problem_document(alice):
    api = APIClient()
    for _ in range(LIMIT - 1):
        r = api.post("/api/auth/token/", {"username": "alice", "password": "guess-1234"}, format="json")
        assert r.status_code == 401
    r = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert r.status_code == 201  # under the limit the right password works (and resets the count)
    for _ in range(LIMIT):
        api.post("/api/auth/token/", {"username": "alice", "password": "guess-1234"}, format="json")
    r = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert r.status_code == 429 and r["Content-Type"].startswith("application/problem+json")
    assert "Too many failed login attempts" in r.json()["detail"] and "key" not in r.json()


def test_wrong_api_keys_lock_out_the_address_even_for_a_valid_key(alice):
    _row, key = create_api_key(alice, alice, name="sdk")
    api = APIClient()
    assert api.get("/api/uploads/", HTTP_X_API_KEY=key).status_code == 200
    prefix = key.partition(".")[0]
    for i in range(LIMIT):
        r = api.get("/api/uploads/", HTTP_X_API_KEY=f"{prefix}.wrong-secret-{i}")
        assert r.status_code in (401, 429)
    r = api.get("/api/uploads/", HTTP_X_API_KEY=key)
    assert r.status_code == 429 and "Too many failed login attempts" in r.json()["detail"]
    assert APIClient(REMOTE_ADDR="10.9.9.9").get("/api/uploads/", HTTP_X_API_KEY="zz.unknown").status_code == 401
    lockout_ends()
    assert api.get("/api/uploads/", HTTP_X_API_KEY=key).status_code == 200


@pytest.mark.parametrize("weak", ["password", "12345678"])
def test_weak_passwords_are_refused_by_the_service_and_the_web_form(client, alice, weak):
    with pytest.raises(InputError, match="too weak"):
        create_user(cli_operator(), "bob", password=weak)
    client.force_login(alice)
    page = client.post("/password/", {"old_password": PASSWORD, "new_password1": weak, "new_password2": weak})
    assert page.status_code == 200 and 'role="alert"' in page.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)
    with pytest.raises(InputError, match="too similar"):
        create_user(cli_operator(), "robert.miller", password="robertmiller1")
    assert create_user(cli_operator(), "bob", password="a much better passphrase 7").check_password(
        "a much better passphrase 7")


def test_cli_user_create_refuses_common_and_numeric_passwords():
    from typer.testing import CliRunner

    from dicomflow.cli import build_app

    for weak, reason in (("password", "too common"), ("12345678", "entirely numeric")):
        done = CliRunner().invoke(build_app(), ["user", "create", "weak", "--password-file", "-"], input=weak + "\n")
        assert done.exit_code != 0 and "too weak" in done.output and reason in done.output, done.output
    done = CliRunner().invoke(build_app(), ["user", "create", "strong", "--password-file", "-"],
                              input="a long enough passphrase 42\n")
    assert done.exit_code == 0, done.output


def test_sessions_end_after_eight_idle_hours_by_default_and_the_age_is_configurable(client, alice, settings):
    from django.contrib.sessions.models import Session

    assert settings.SESSION_COOKIE_AGE == 8 * 3600
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.cookies["sessionid"]["max-age"] == 8 * 3600
    # idle: the expiry is pushed back by a request once the last push is over 5 minutes old
    row = Session.objects.get()
    Session.objects.filter(pk=row.pk).update(expire_date=timezone.now() + timedelta(hours=1))
    assert "sessionid" not in client.get("/token/").cookies  # pushed a moment ago: nothing written
    session = client.session
    session["dicomflow_refreshed"] = int(time.time()) - 301
    session.save()
    Session.objects.filter(pk=row.pk).update(expire_date=timezone.now() + timedelta(hours=1))
    assert client.get("/token/").cookies["sessionid"]["max-age"] == 8 * 3600
    assert Session.objects.get().expire_date > timezone.now() + timedelta(hours=7, minutes=59)
    env = dict(os.environ, DICOMFLOW_SESSION_IDLE_HOURS="1.5")
    out = subprocess.run([sys.executable, "-c", "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)"],
                         env=env | {"DJANGO_SETTINGS_MODULE": "dicomflow.settings"}, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "5400", out.stderr


def test_the_first_admin_must_change_the_generated_password_which_then_leaves_the_disk(client):
    password = bootstrap.ensure_admin_account("admin")
    path = bootstrap.initial_password_path()
    assert path.read_text().strip() == password and path.stat().st_mode & 0o077 == 0
    token = APIClient().post("/api/auth/token/", {"username": "admin", "password": password}, format="json")
    assert token.status_code == 403 and "generated first password" in token.json()["detail"]
    assert client.post("/login/", {"username": "admin", "password": password}).status_code == 302
    for url in ("/", "/patients/", "/admin/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"] == "/password/", url
    assert client.get("/api/patients/").status_code == 403
    page = client.get("/password/").content.decode()
    assert 'id="df-password-required"' in page
    # a weak new password is refused and changes nothing
    client.post("/password/", {"old_password": password, "new_password1": "password", "new_password2": "password"})
    assert path.exists()
    done = client.post("/password/", {"old_password": password, "new_password1": "an admin's own passphrase 9",
                                      "new_password2": "an admin's own passphrase 9"})
    assert done.status_code == 302 and not path.exists()
    assert client.get("/").status_code == 200 and client.get("/admin/").status_code == 200


def test_the_generated_password_file_goes_when_the_password_is_changed_elsewhere(client, django_user_model):
    bootstrap.ensure_admin_account("admin")
    path = bootstrap.initial_password_path()
    admin = django_user_model.objects.get(username="admin")
    admin.save()  # saving without a new password keeps it
    assert path.exists()
    admin.set_password("changed on the command line 5")
    admin.save()
    assert not path.exists()
