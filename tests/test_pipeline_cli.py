"""``dicomflow process PATH --template NAME --project KEY --out DIR --json`` as a subprocess, in its own home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.slow

PATIENT = PatientSpec("CLI-PAT-2024", "Cli^Carla", "F", "19800229")
STAGES = ["uploading", "importing", "checking", "deidentifying", "processing", "verifying", "reidentifying",
          "quality_control", "exporting"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One home for the module: the database is migrated once."""
    return tmp_path_factory.mktemp("process-home")


def _process(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DICOMFLOW_HOME": str(home), "DICOMFLOW_FSYNC": "never"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", "process", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=300)


def test_process_folder_by_rules_to_out_dir(tmp_path, home):
    info = write_image_series(tmp_path / "in", patient=PATIENT, n_slices=12, rows=48, cols=48, seed="cli-ct")
    out = tmp_path / "out"
    done = _process(home, str(tmp_path / "in"), "--project", "CLI", "--out", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"job", "status", "stages", "results"}
    assert document["status"] == "finished"
    assert [s["name"] for s in document["stages"]] == STAGES
    assert {s["status"] for s in document["stages"]} <= {"done", "skipped"}
    assert [s["status"] for s in document["stages"] if s["name"] == "importing"] == ["done"]
    [result] = document["results"]
    assert Path(result).parent == out.resolve()
    ds = pydicom.dcmread(result)
    assert ds.PatientID == PATIENT.patient_id and ds.Modality == "RTSTRUCT"
    referenced = {str(s.SeriesInstanceUID) for f in ds.ReferencedFrameOfReferenceSequence
                  for st in f.RTReferencedStudySequence for s in st.RTReferencedSeriesSequence}
    assert referenced == {info.series_uid}


def test_process_with_explicit_template_and_failures(tmp_path, home):
    write_image_series(tmp_path / "mr", patient=PATIENT, modality="MR", n_slices=12, rows=16, cols=16, seed="cli-mr")
    # the rules find nothing for MR: the job fails, the reason is on stderr, exit status 1
    done = _process(home, str(tmp_path / "mr"), "--project", "CLI", "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["status"] == "failed" and document["results"] == []
    assert {"name": "checking", "status": "failed"} in document["stages"]
    assert "RULE_NOT_MATCHED" in done.stderr
    # an explicit template that does not fit says why
    done = _process(home, str(tmp_path / "mr"), "--template", "ct-body-lungs", "--project", "CLI")
    assert done.returncode == 1 and "needs modality CT" in done.stderr
    # an unknown template is refused before any job starts
    done = _process(home, str(tmp_path / "mr"), "--template", "nope", "--project", "CLI")
    assert done.returncode == 1 and "no template named 'nope'" in done.stderr
    assert json.loads(done.stdout) == {"error": done.stderr.strip().removeprefix("error: ")}
    for text in (done.stdout, done.stderr):
        assert PATIENT.patient_id not in text and "Cli^Carla" not in text


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DICOMFLOW_HOME": str(home), "DICOMFLOW_FSYNC": "never"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_quality_control_from_the_command_line(tmp_path, home):
    write_image_series(tmp_path / "in", patient=PATIENT, n_slices=12, rows=32, cols=32, seed="cli-qc")
    out = tmp_path / "out"
    done = _process(home, str(tmp_path / "in"), "--project", "CLI", "--out", str(out), "--require-qc")
    assert done.returncode == 3, done.stderr
    job = json.loads(done.stdout)["job"]
    assert json.loads(done.stdout)["status"] == "waiting" and not out.exists()
    shown = json.loads(_cli(home, "jobs", "show", str(job), "--json").stdout)
    assert {"name": "quality_control", "status": "waiting"} in [{k: s[k] for k in ("name", "status")}
                                                                for s in shown["stages"]]
    approved = _cli(home, "jobs", "approve", str(job), "--json")
    assert approved.returncode == 0, approved.stderr
    document = json.loads(approved.stdout)
    assert document["status"] == "finished" and [Path(p).parent for p in document["results"]] == [out.resolve()]
    log = json.loads(_cli(home, "jobs", "log", str(job), "--stage", "exporting", "--json").stdout)["entries"]
    assert [e["message"] for e in log][-1] == "Exporting: done"
    again = _cli(home, "jobs", "retry", str(job), "--json")
    assert again.returncode == 1 and "only a failed job can be retried" in again.stderr
    missing = _cli(home, "jobs", "show", "99999", "--json")
    assert missing.returncode == 1 and "no job #99999" in missing.stderr
