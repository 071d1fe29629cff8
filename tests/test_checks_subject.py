"""Consistency of patient attributes within a study, and sanity against the expected subject."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom

from dicomflow.core.checks import (
    Code,
    ExpectedSubject,
    PatientHeader,
    SanityStatus,
    check_consistency,
    check_path,
    check_sanity,
)
from dicomflow.testing import synth

PATIENT = synth.PatientSpec("PAT0042", "Doe^Jane", "F", "19650412")


def headers(n=3, **override):
    base = dict(patient_id="PAT0042", patient_name="Doe^Jane", patient_sex="F", patient_birth_date="19650412")
    out = [PatientHeader("1.2.3", **base) for _ in range(n)]
    if override:
        out.append(PatientHeader("1.2.3", **{**base, **override}))
    return out


def test_consistent_study_has_no_findings():
    assert check_consistency(headers()) == {"1.2.3": []}


def test_each_disagreement_has_its_code():
    cases = {
        "patient_id": Code.CONSISTENCY_PATIENT_ID,
        "patient_name": Code.CONSISTENCY_PATIENT_NAME,
        "patient_sex": Code.CONSISTENCY_PATIENT_SEX,
        "patient_birth_date": Code.CONSISTENCY_PATIENT_BIRTH_DATE,
    }
    for attr, code in cases.items():
        findings = check_consistency(headers(**{attr: "OTHER"}))["1.2.3"]
        assert [f.code for f in findings] == [code]
        assert "OTHER" not in findings[0].message


def test_consistency_from_files_flags_every_series_of_the_study(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", PATIENT, n_slices=4, rows=32, cols=32)
    rs = synth.write_rtstruct(tmp_path / "rs", ct)
    mr = synth.write_image_series(tmp_path / "mr", PATIENT, modality="MR", n_slices=4, rows=32, cols=32)
    clean, _ = check_path(tmp_path)
    assert not [f for r in clean for f in r.findings if f.code.startswith("CONSISTENCY")]
    ds = pydicom.dcmread(ct.paths[1])
    ds.PatientID = "PAT9999"
    ds.save_as(ct.paths[1])
    reports = {r.uid: r for r in check_path(tmp_path)[0]}
    for uid in (ct.series_uid, rs.series_uid):
        assert Code.CONSISTENCY_PATIENT_ID in {f.code for f in reports[uid].findings}
    assert not [f for f in reports[mr.series_uid].findings if f.code.startswith("CONSISTENCY")]  # other study
    assert "PAT9999" not in json.dumps([f.message for r in reports.values() for f in r.findings])


def test_sanity_matches():
    for expected in (
        ExpectedSubject(sex="F", birth_date="19650412"),
        ExpectedSubject(sex="f"),
        ExpectedSubject(birth_year=1965),
    ):
        result = check_sanity(headers(), expected)
        assert result.status == SanityStatus.MATCHES and result.findings == []


def test_sanity_conflict():
    result = check_sanity(headers(), ExpectedSubject(sex="M", birth_year=1965))
    assert result.status == SanityStatus.CONFLICT
    assert [f.code for f in result.findings] == [Code.SANITY_SEX_CONFLICT]
    result = check_sanity(headers(), ExpectedSubject(birth_year=1966))
    assert result.status == SanityStatus.CONFLICT
    assert [f.code for f in result.findings] == [Code.SANITY_BIRTH_DATE_CONFLICT]
    result = check_sanity(headers(), ExpectedSubject(birth_date="19650413"))
    assert result.status == SanityStatus.CONFLICT
    assert "19650412" not in json.dumps(result.as_dict())


def test_sanity_inconsistent_wins_over_conflict():
    result = check_sanity(headers(patient_sex="M"), ExpectedSubject(sex="F", birth_year=1970))
    assert result.status == SanityStatus.INCONSISTENT
    assert {f.code for f in result.findings} == {Code.SANITY_INCONSISTENT, Code.SANITY_BIRTH_DATE_CONFLICT}
    # an attribute that is not compared does not make it inconsistent
    assert check_sanity(headers(patient_sex="M"), ExpectedSubject(birth_year=1965)).status == SanityStatus.MATCHES


def test_sanity_on_empty_header_is_not_verifiable():
    blank = [PatientHeader("1.2.3", "P", "N", "", "")]
    result = check_sanity(blank, ExpectedSubject(sex="F"))
    assert result.status == SanityStatus.MATCHES
    assert [f.code for f in result.findings] == [Code.SANITY_NOT_VERIFIABLE]


def test_cli_sanity_option(tmp_path):
    synth.write_image_series(tmp_path, PATIENT, n_slices=3, rows=32, cols=32)

    def run(*opts):
        proc = subprocess.run([sys.executable, "-m", "dicomflow.cli", "check", str(tmp_path), "--json", *opts],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert "sanity" not in run()
    assert run("--expected-sex", "F", "--expected-birth-year", "1965")["sanity"]["status"] == "MATCHES"
    assert run("--expected-birth-date", "19700101")["sanity"]["status"] == "CONFLICT"
