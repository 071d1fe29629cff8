"""The import benchmark runs end to end (tiny: 20 slices, 1 run) with every peer that is installed.

It checks that the script works — every contender measured or skipped for a stated reason, the
JSON document complete, every process it started gone — not the numbers.
"""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "import_bench.py"
sys.path.insert(0, str(SCRIPT.parent))

import _peers  # noqa: E402


def _descendants_now() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.slow
def test_import_bench_quick_run(tmp_path):
    require_tool("storescu")
    require_tool("storescp")
    args = [sys.executable, str(SCRIPT), "--slices", "20", "--size", "128", "--runs", "1",
            "--mem-series", "2", "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "bench.json")]
    has_orthanc = _peers.tool("Orthanc") is not None
    if not has_orthanc:
        args.append("--skip-orthanc")
    before = _descendants_now()
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PASS" in res.stdout or "MISS" in res.stdout

    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["config"]["files"] == 20
    contenders = report["contenders"]
    measured = ["import/batch", "import/never", "cp -r", "storescp/nodelay", "storescp/nagle",
                "pynetdicom bare/nodelay"]
    if has_orthanc:
        measured.append("orthanc")
    if _peers.dicomflow_has_command("scp"):
        measured += ["dicomflow scp/nodelay", "dicomflow scp/nagle"]
    for name in measured:
        entry = contenders[name]
        assert len(entry["seconds"]) == 1 and entry["files_per_s"] > 0, (name, entry)
    for name, entry in contenders.items():
        assert entry.get("files_per_s") or entry.get("skipped"), (name, entry)
    assert report["ratios"]["import_vs_cp"] > 0
    assert report["memory"]["files"] == 40
    assert 0 < report["memory"]["peak_tree_pss_mb"] <= report["memory"]["peak_tree_rss_mb"] < 10_000
    assert {t["status"] for t in report["targets"]} <= {"PASS", "MISS", "n/a"}
    assert report["errors"] == {}
    # cleaned up: inputs and run outputs removed, no peer left running
    assert not (tmp_path / "work" / "runs").exists() and not (tmp_path / "work" / "input").exists()
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"])
                 if p.pid not in before and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


@pytest.mark.slow
def test_profile_import_runs(tmp_path):
    out = tmp_path / "prof.json"
    res = subprocess.run([sys.executable, str(SCRIPT.parent / "profile_import.py"), "--slices", "10", "--size", "64",
                          "--workdir", str(tmp_path), "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["files"] == 10
    stages = {row["stage"]: row for row in doc["stages"]}
    assert any(name.startswith("import_paths, 1 worker") for name in stages)
    assert all(row["wall_ms_per_file"] >= 0 and row["cpu_ms_per_file"] >= 0 for row in doc["stages"])
    assert list(tmp_path.iterdir()) == [out]  # its work folder is gone
