"""`dicomflow user create`, `apikey create|list|revoke`, `project add-member|remove-member` and the
permission-checked, audited `dicomflow reidentify --user NAME` (real processes, one home)."""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicomflow.testing import synth

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))
PATIENT = synth.PatientSpec("PATACLI-5", "Keyholder^Kim", "F", "19660606")


def run(home: Path, *args: str, ok: bool = True, stdin: str | None = None) -> dict:
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    env.pop("DATABASE_URL", None)
    result = subprocess.run([DICOMFLOW, *args, "--json"], env=env, capture_output=True, text=True, timeout=300,
                            input=stdin)
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    if not ok:
        assert result.stderr.startswith("error: ")
    return json.loads(result.stdout)


def audit_rows(home: Path, action: str) -> list[tuple]:
    with sqlite3.connect(home / "dicomflow.sqlite3") as db:
        return db.execute("SELECT username, outcome, project, object, detail FROM accounts_auditentry "
                          "WHERE action = ? ORDER BY id", (action,)).fetchall()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("accounts-cli")
    home = root / "home"
    assert run(home, "project", "create", "ACLI")["key"] == "ACLI"
    return home


def test_users_members_and_api_keys(home, tmp_path):
    operator = f"cli:{getpass.getuser()}"
    password = tmp_path / "pw"
    password.write_text("a long enough passphrase 42\n")
    alice = run(home, "user", "create", "alice", "--email", "alice@example.org", "--password-file", str(password))
    assert alice["username"] == "alice" and alice["password"] is True and alice["clinical_pool"] is False
    clara = run(home, "user", "create", "clara", "--clinical-pool", "--password-file", "-",
                stdin="another long passphrase 17\n")
    assert clara["clinical_pool"] is True
    assert "exists already" in run(home, "user", "create", "alice", ok=False)["error"]
    password.write_text("short\n")
    assert "too weak" in run(home, "user", "create", "weak", "--password-file", str(password), ok=False)["error"]

    member = run(home, "project", "add-member", "ACLI", "alice", "--role", "data_manager")
    assert member == {"project": "ACLI", "user": "alice", "role": "data_manager"}
    assert "unknown role" in run(home, "project", "add-member", "ACLI", "alice", "--role", "boss", ok=False)["error"]
    assert "no user" in run(home, "project", "add-member", "ACLI", "nobody", "--role", "viewer", ok=False)["error"]
    assert "NOPE" in run(home, "project", "add-member", "NOPE", "alice", "--role", "viewer", ok=False)["error"]
    assert run(home, "project", "add-member", "ACLI", "clara", "--role", "viewer")["role"] == "viewer"
    assert run(home, "project", "remove-member", "ACLI", "clara")["role"] is None
    changes = audit_rows(home, "role_change")
    assert [(u, o, p) for u, o, p, _, _ in changes] == [
        (operator, "ok", ""), (operator, "ok", ""),  # two users created
        (operator, "ok", "ACLI"), (operator, "ok", "ACLI"), (operator, "ok", "ACLI"),  # add, add, remove
    ]

    created = run(home, "apikey", "create", "alice", "--expires-in-days", "30")
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(prefix + ".") and created["user"] == "alice" and created["expires"]
    listed = run(home, "apikey", "list", "alice")["keys"]
    assert [(k["prefix"], k["revoked"]) for k in listed] == [(prefix, False)]
    assert key not in json.dumps(listed)
    assert run(home, "apikey", "revoke", prefix) == {"prefix": prefix, "revoked": True}
    assert run(home, "apikey", "list", "alice")["keys"][0]["revoked"] is True
    assert "no such API key" in run(home, "apikey", "revoke", "nothere", ok=False)["error"]
    assert [(u, d) for u, _, _, _, d in audit_rows(home, "api_key")] == [
        (operator, f"created for user #{alice['id']}"), (operator, "revoked")]
    with sqlite3.connect(home / "dicomflow.sqlite3") as db:
        stored = db.execute("SELECT hashed_key FROM accounts_apikey").fetchone()[0]
    assert key not in stored and key.split(".")[1] not in stored  # only a hash is kept


def test_reidentify_needs_a_named_reidentifier_and_is_audited(home, tmp_path):
    info = synth.write_image_series(tmp_path / "src", patient=PATIENT, n_slices=2, rows=16, cols=16, seed="acli")
    run(home, "deid", str(tmp_path / "src"), str(tmp_path / "deid"), "--project", "ACLI")
    run(home, "user", "create", "rita")
    run(home, "user", "create", "dan")
    run(home, "project", "add-member", "ACLI", "dan", "--role", "data_manager")
    before = len(audit_rows(home, "reidentify"))

    for user in ("dan", "rita"):  # a data manager, and a user of no role
        error = run(home, "reidentify", str(tmp_path / "deid"), str(tmp_path / user), "--project", "ACLI",
                    "--user", user, ok=False)["error"]
        assert "Re-identifier" in error and not (tmp_path / user).exists()
    os_login = run(home, "reidentify", str(tmp_path / "deid"), str(tmp_path / "me"), "--project", "ACLI",
                   ok=False)["error"]
    assert getpass.getuser() in os_login and not (tmp_path / "me").exists()  # no such dicomflow user
    refusals = audit_rows(home, "reidentify")[before:]
    assert [(u, o) for u, o, *_ in refusals] == [("dan", "denied"), ("rita", "denied"),
                                                  (f"cli:{getpass.getuser()}", "denied")]

    run(home, "project", "add-member", "ACLI", "rita", "--role", "reidentifier")
    doc = run(home, "reidentify", str(tmp_path / "deid"), str(tmp_path / "back"), "--project", "ACLI",
              "--user", "rita", "--purpose", "tumour board")
    assert doc["files_in"] == doc["files_out"] == 2 and doc["failed"] == []
    restored = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                      for p in (tmp_path / "back").rglob("*.dcm"))
    assert restored == sorted(info.sop_instance_uids)
    [allowed] = [row for row in audit_rows(home, "reidentify") if row[1] == "ok"]
    username, _, project, obj, detail = allowed
    assert (username, project) == ("rita", "ACLI") and f"cli:{getpass.getuser()}" in obj
    assert "2 of 2 file(s)" in detail and "tumour board" in detail
    assert PATIENT.patient_id not in obj + detail and str(tmp_path) not in obj + detail
    assert "NOPE" in run(home, "reidentify", str(tmp_path / "deid"), str(tmp_path / "x"), "--project", "NOPE",
                         "--user", "rita", ok=False)["error"]
