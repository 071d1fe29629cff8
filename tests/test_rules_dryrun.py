"""``dicomflow rules dry-run``: every series of a folder judged and explained, nothing written."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.core.rules import SeriesStatus, builtin_templates, default_rulesets, dry_run
from dicomflow.testing import synth


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("dryrun")
    patient = synth.PatientSpec(patient_id="ID-99887", name="Roe^Richard", sex="M", birth_date="19511224")
    ct = synth.write_image_series(root / "a" / "ct", patient=patient, n_slices=12, rows=16, cols=16)
    scout = synth.write_image_series(
        root / "b", patient=patient, n_slices=3, rows=16, cols=16, study_uid=ct.study_uid, series_number=5
    )
    rs = synth.write_rtstruct(root / "a", ct)
    (root / "notes.txt").write_text("not dicom")
    synth.write_zip(root / "more.zip", ct.paths[:2])
    return root, ct, scout, rs


def run_cli(*args, home: Path):
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "rules", "dry-run", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_dry_run_in_core_judges_each_series(folder):
    root, ct, scout, rs = folder
    report = dry_run(root, default_rulesets(), builtin_templates())
    by_uid = {e.series_uid: e for e in report.evaluations}
    assert set(by_uid) == {ct.series_uid, scout.series_uid, rs.series_uid}
    assert by_uid[ct.series_uid].status is SeriesStatus.RULE_MATCHED
    assert by_uid[scout.series_uid].status is SeriesStatus.RULE_NOT_MATCHED
    assert by_uid[rs.series_uid].status is SeriesStatus.RULE_NOT_MATCHED
    skipped = {p.name: reason for p, reason in report.skipped}
    assert set(skipped) == {"more.zip", "notes.txt"}
    assert skipped["notes.txt"] == "not a DICOM file" and "unpack it first" in skipped["more.zip"]


def test_cli_dry_run_prints_the_contract_masks_identity_and_writes_nothing(folder, tmp_path):
    root, ct, scout, rs = folder
    before = snapshot(root)
    home = tmp_path / "home-never-created"
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [
                {"name": "ct", "template": "ct-body-lungs", "match": {"attribute": "Modality", "operator": "equals", "value": "CT"}},
                {"name": "ct-patient", "template": "ct-body-lungs", "match": {"and": [
                    {"attribute": "PatientID", "operator": "equals", "value": "ID-99887"},
                    {"attribute": "Modality", "operator": "equals", "value": "CT"},
                    {"attribute": "NumberOfSeriesRelatedInstances", "operator": "gte", "value": 10},
                ]}},
                {"name": "structures", "template": "no-such-template", "match": {"attribute": "StructureSetROISequence[*].ROIName", "operator": "equals", "value": "PTV"}},
            ]
        )
    )
    rules_before = rules.read_bytes()
    done = run_cli(root, "--rules", rules, "--json", home=home)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert list(document) == ["series"]
    rows = {row["uid"]: row for row in document["series"]}
    for row in rows.values():
        assert set(row) == {"uid", "status", "template", "explanation"}
    assert rows[ct.series_uid]["status"] == "MULTIPLE_RULES_MATCHED"
    assert rows[ct.series_uid]["explanation"]["matched_rulesets"] == ["ct", "ct-patient"]
    assert rows[scout.series_uid]["status"] == "RULE_MATCHED"
    assert rows[scout.series_uid]["template"] == "ct-body-lungs"
    assert rows[rs.series_uid]["status"] == "NO_TEMPLATE_FOUND"
    for secret in ("ID-99887", "Roe", "Richard", "19511224"):
        assert secret not in done.stdout
    assert "notes.txt" in done.stderr
    # No side effects: inputs untouched, no data directory created, rules file unchanged.
    assert snapshot(root) == before
    assert not home.exists()
    assert rules.read_bytes() == rules_before


def test_cli_default_rules_and_clear_errors(folder, tmp_path):
    root, ct, _, _ = folder
    done = run_cli(root / "a" / "ct", "--json", home=tmp_path / "h")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["series"]
    assert [(r["uid"], r["status"], r["template"]) for r in rows] == [(ct.series_uid, "RULE_MATCHED", "ct-body-lungs")]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "match": {"attribute": "Modalty", "operator": "equals", "value": "CT"}}]))
    done = run_cli(root, "--rules", bad, "--json", home=tmp_path / "h")
    assert done.returncode != 0
    assert "'Modalty' is not a DICOM keyword" in json.loads(done.stdout)["error"]
    done = run_cli(tmp_path / "missing", "--json", home=tmp_path / "h")
    assert done.returncode != 0 and "does not exist" in done.stderr


def test_defaults_document_is_a_valid_rules_file(folder, tmp_path):
    root, ct, scout, _ = folder
    env = dict(os.environ, DICOMFLOW_HOME=str(tmp_path / "h"))
    done = subprocess.run(
        [sys.executable, "-m", "dicomflow.cli", "rules", "defaults", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [t["name"] for t in document["templates"]] == ["ct-body-lungs"]
    # edit the default: accept 3-image series too, then feed it back
    group = document["rulesets"][0]["match"]["and"][3]["or"]
    group[0]["value"] = 3
    rules = tmp_path / "edited.json"
    rules.write_text(json.dumps(document))
    done = run_cli(root, "--rules", rules, "--json", home=tmp_path / "h")
    rows = {r["uid"]: r for r in json.loads(done.stdout)["series"]}
    assert rows[scout.series_uid]["status"] == "RULE_MATCHED"
    assert rows[ct.series_uid]["status"] == "RULE_MATCHED"
