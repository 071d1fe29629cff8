"""Issue 13, unit level: the table knows every attribute (or cleans/removes it), the cleaner and the
scan know the identity in its other written forms, and the command line reports per file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.datadict import DicomDictionary, tag_for_keyword

from dicomflow.core.deid import Options
from dicomflow.core.deid.clean import DescriptorCleaner
from dicomflow.core.deid.engine import SAFE_UNLISTED, Deidentifier
from dicomflow.core.deid.leak import scan_bytes
from dicomflow.core.deid.table import SUPPLEMENT, rule_for, table
from dicomflow.core.deid.values import IdentifyingValues, dates_in
from dicomflow.testing import synth

STANDARD = Path("/work/shared/standard/ps3.15-table-e.1-1.json")
DICOMFLOW = [sys.executable, "-m", "dicomflow.cli"]


def test_table_has_every_row_of_the_standard_and_the_supplement():
    rows = json.loads(STANDARD.read_text("utf-8")) if STANDARD.exists() else []
    public = [r for r in rows if "x" not in r["id"].lower() and not r["id"].lower().startswith("gggg")]
    assert all(int(r["id"], 16) in table() for r in public)
    assert len(table()) >= 617
    for keyword in ("DocumentTitle", "HL7InstanceIdentifier", "ContentLabel", "ContentDescription",
                    "GraphicLayerDescription", "CompletionFlagDescription", "BeamName", "PatientSetupLabel",
                    "ToleranceTableLabel", "DoseComment", "PatientBirthDateInAlternativeCalendar",
                    "UniversalEntityID", "LocalNamespaceEntityID"):
        assert keyword in SUPPLEMENT and rule_for(tag_for_keyword(keyword)) is not None


def test_an_attribute_the_table_does_not_know_is_never_kept_unless_allowed():
    """Every public dictionary attribute the table lacks: text cleaned (or dummy), binary removed."""
    deid = Deidentifier(_key(), Options())
    kept_text = []
    for tag, (vr, _vm, _name, retired, keyword) in DicomDictionary.items():
        if tag >> 16 & 1 or rule_for(tag) is not None or not keyword or retired:
            continue
        if tag >> 16 in (0x0000, 0x0002, 0xFFFE):
            continue
        action, _ = deid.decide(tag, vr, "normal", "1.2.840.10008.5.1.4.1.1.2")
        if action == "K" and vr in ("LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR", "OB", "OW", "UN", "AS") \
                and keyword not in SAFE_UNLISTED:
            kept_text.append(keyword)
    assert kept_text == []
    assert deid.decide(tag_for_keyword("TextValue"), "UT", "normal", "")[0] in ("C", "D")
    assert deid.decide(0x00001030, "AE", "normal", "")[0] == "X"  # group 0000 in a data set


def _key():
    from dicomflow.core.deid import ProjectKey

    return ProjectKey("U", b"u" * 32)


def values_for(*names: str, ids: tuple[str, ...] = (), dates: tuple[str, ...] = ()) -> IdentifyingValues:
    v = IdentifyingValues()
    for n in names:
        v.add_name(n)
    for i in ids:
        v.add_id(i)
    for d in dates:
        v.add_date(d)
    return v


def cleaner(v: IdentifyingValues, allowlist: bool = False) -> DescriptorCleaner:
    return DescriptorCleaner(v.tokens, v.ids, v.scripts, allowlist=allowlist)


def test_cleaner_knows_the_identity_in_other_forms():
    v = values_for("Schrödinger^Erwin", "Wuest^Hanna", "Wu^Li", ids=("HXQ-KZ7-0098",))
    c = cleaner(v)
    assert c.clean("Thorax Schroedinger") == "Thorax"
    assert c.clean("Lung_L_SCHRODINGER") == "Lung_L"
    assert c.clean("PTV ErwinSchrödinger") == "PTV"
    assert c.clean("Setup Wüst") == "Setup"
    assert c.clean("seen by Wu and Li") == "seen by and"
    assert c.clean("ID HXQ-KZ7-0098 done") == "ID done"
    assert c.clean("born 01 Jan 1801, 1 January 1801, 01.01.1801, 1801-01-01, 01/01/1801 ok") == "born ok"


def test_non_latin_names_removed_by_word_never_collapsed():
    v = values_for("Yamada^Tarou=山田^太郎=やまだ^たろう")
    c = cleaner(v)
    assert c.clean("山田太郎様 thorax") == "様 thorax"
    assert c.clean("Чернов thorax") == "Чернов thorax"  # unrelated Cyrillic word kept whole


def test_allowlist_keeps_vocabulary_only():
    c = cleaner(IdentifyingValues(), allowlist=True)
    assert c.clean("PTV_Hoffmannsthal") == "PTV"
    assert c.clean("Lung_L") == "Lung_L"
    assert c.clean("Plan Hoffmannsthal 60 Gy") == "Plan 60 Gy"
    assert c.clean("SpinalCord PRV05") == "SpinalCord PRV05"


def test_scan_finds_identity_forms():
    v = values_for("Schrödinger^Erwin", "Wu^Li", ids=("HXQ-KZ7-0098",), dates=("18010101",))
    assert scan_bytes(b"x SCHROEDINGER x", v) == ["name/id"]
    assert scan_bytes("x Schrödinger x".encode(), v) == ["name/id"]
    assert scan_bytes(b"x ERWINSCHRODINGER x", v) == ["name/id"]
    assert scan_bytes(b"\x00WU^LI\x00", v) == ["name/id"]
    assert scan_bytes(b"\x00 HXQ KZ7 0098 \x00", v) == ["name/id"]
    assert scan_bytes(b"born 01 Jan 1801", v) == ["date"]
    assert scan_bytes(b"born 01.01.1801", v) == ["date"]
    assert scan_bytes(b"born 1801-01-01", v) == ["date"]
    assert scan_bytes(b"\x10\x00\x10\x00PN\x08\x00LO", v) == []  # VR codes are not names
    assert "18010101" in dates_in("Jan 1, 1801") and "18010101" in dates_in("1. Januar 1801")


def cli(*args, home: Path, check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    return subprocess.run([*DICOMFLOW, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_dicomdir_skipped_exit_zero_and_options(tmp_path):
    src = tmp_path / "src"
    info = synth.write_image_series(src / "ct", n_slices=2, rows=8, cols=8, seed=21)
    synth.write_dicomdir(tmp_path / "media", [info.paths[0]])
    (tmp_path / "media" / "DICOMDIR").rename(src / "DICOMDIR")
    res = cli("deid", str(src), str(tmp_path / "out"), "--project", "DIR", "--json",
              "--options", '{"free_text": "allowlist"}', home=tmp_path / "h")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["files_out"] == 2 and doc["failed"] == [] and "DICOMDIR" in doc["skipped"][0]["reason"]
    stored = json.loads((tmp_path / "h" / "keys" / "projects" / "DIR.options.json").read_text())
    assert stored["free_text"] == "allowlist"
    bad = cli("deid", str(src), str(tmp_path / "out2"), "--project", "DIR", "--json",
              "--options", '{"free_text": "maybe"}', home=tmp_path / "h")
    assert bad.returncode != 0 and "free_text" in json.loads(bad.stdout)["error"]


def test_killed_job_leaves_nothing_in_dst(tmp_path):
    """SIGKILL while the job runs: DST holds no file; the next job cleans the job folder."""
    src = tmp_path / "src"
    synth.write_image_series(src, n_slices=120, rows=64, cols=64, seed=22)
    dst = tmp_path / "out"
    env = dict(os.environ, DICOMFLOW_HOME=str(tmp_path / "h"))
    proc = subprocess.Popen([*DICOMFLOW, "deid", str(src), str(dst), "--project", "KILL", "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = tmp_path / ".dicomflow-partial-out"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (job.exists() and any(job.rglob("*.dcm"))):
        if proc.poll() is not None:
            pytest.skip("the job finished before it could be killed")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not dst.exists() or not list(dst.rglob("*.dcm"))
    res = cli("deid", str(src), str(dst), "--project", "KILL", "--json", home=tmp_path / "h")
    assert res.returncode == 0 and json.loads(res.stdout)["files_out"] == 120
    assert not job.exists() and len(list(dst.rglob("*.dcm"))) == 120
