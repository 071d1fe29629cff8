"""`dicomflow project create|list|status` and `dicomflow stage` (CLI contract), and the key shared with `deid`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.testing import synth

DICOMFLOW = str(Path(sys.executable).with_name("dicomflow"))


def run(home: Path, *args: str, ok: bool = True) -> dict:
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    env.pop("DATABASE_URL", None)
    result = subprocess.run([DICOMFLOW, *args, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == ok, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home_with_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    info = synth.write_rt_study(root / "src", synth.PatientSpec("PATCLI31337", "Clitest^Carl", "M", "19480808"),
                                n_slices=6, rows=16, cols=16, with_mr=False)
    home = root / "home"
    assert run(home, "import", str(info.out_dir))["instances_new"] == len(info.paths)
    return home, info


@pytest.mark.slow
def test_create_list_stage_status(home_with_study, tmp_path):
    home, info = home_with_study
    created = run(home, "project", "create", "TRIAL1", "--name", "Trial one")
    assert created["key"] == "TRIAL1" and created["name"] == "Trial one"
    assert created["options"]["retain_long_modified_dates"] and created["options"]["clean_descriptors"]
    assert (home / "keys" / "projects" / "TRIAL1.key").stat().st_mode & 0o077 == 0
    again = run(home, "project", "create", "TRIAL1", ok=False)
    assert "exists" in again["error"]
    listed = run(home, "project", "list")["projects"]
    assert [p["key"] for p in listed] == ["TRIAL1"] and listed[0]["studies"] == 0

    assert run(home, "project", "status", info.study_uid)["projects"] == [
        {"project": "TRIAL1", "status": "none", "series_staged": 0, "series_total": len(info.series_uids)}
    ]
    dose = info.dose_for(info.approved_plan)
    job = run(home, "stage", info.study_uid, "--project", "TRIAL1", "--series", dose.series_uid)
    assert job["status"] == "finished" and job["error"] == ""
    assert set(job["selected_series"]) == {dose.series_uid, info.approved_plan.series_uid,
                                           info.rtstruct.series_uid, info.ct.series_uid}
    assert job["files_in"] == job["files_out"] == job["instances_new"] == len(info.ct.paths) + 3
    assert job["leak_scan"] == {"findings": 0}
    status = run(home, "project", "status", info.study_uid)["projects"][0]
    assert (status["status"], status["series_staged"]) == ("partly", 4)
    assert run(home, "project", "list")["projects"][0]["studies"] == 1

    # `dicomflow deid` with the same KEY uses the same secret: the same new UIDs as the staged copy
    out = tmp_path / "deid"
    report = run(home, "deid", str(info.ct.paths[0].parent), str(out), "--project", "TRIAL1")
    assert report["files_out"] == len(info.ct.paths)
    from_cli = {p.relative_to(out).as_posix() for p in out.rglob("*.dcm")}
    in_store = {"/".join(p.parts[-3:]) for p in (home / "store").rglob("*.dcm")}
    assert from_cli and from_cli <= in_store

    bad = run(home, "stage", info.study_uid, "--project", "NOPE", ok=False)
    assert "no project" in bad["error"]
    bad = run(home, "stage", "1.2.3", "--project", "TRIAL1", ok=False)
    assert "no clinical study" in bad["error"]


def test_options_json_and_adoption_of_a_deid_key(home_with_study, tmp_path):
    home, info = home_with_study
    made = run(home, "project", "create", "CHARS", "--options", '{"retain_patient_characteristics": true}')
    assert made["options"]["retain_patient_characteristics"] is True
    stored = json.loads((home / "keys" / "projects" / "CHARS.options.json").read_text())
    assert stored["retain_patient_characteristics"] is True
    bad = run(home, "project", "create", "BAD", "--options", '{"no_such_option": 1}', ok=False)
    assert "no_such_option" in bad["error"]
    bad = run(home, "project", "create", "BAD2", "--options", "{not json", ok=False)
    assert "not valid JSON" in bad["error"]

    # a key first used by `dicomflow deid` keeps its secret and options when the project is created
    run(home, "deid", str(info.rtstruct.path.parent), str(tmp_path / "first"), "--project", "LATER")
    secret = (home / "keys" / "projects" / "LATER.key").read_text()
    made = run(home, "project", "create", "LATER")
    assert (home / "keys" / "projects" / "LATER.key").read_text() == secret
    assert made["options"]["date_shift_days"] == [-365, -30]
