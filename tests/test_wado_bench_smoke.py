"""The WADO-RS memory benchmark runs end to end at small scale (20 slices of 64², one run).

It checks that the script works — a real gunicorn worker serves the series, every part arrives,
the figures are complete and the server it started is gone — not the numbers.
"""

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "wado_bench.py"


@pytest.mark.slow
def test_wado_bench_quick_run(tmp_path):
    out = tmp_path / "wado.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--slices", "20", "--size", "64", "--runs", "1",
                          "--workdir", str(tmp_path / "work"), "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PASS" in res.stdout or "MISS" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["errors"] == [] and doc["slices"] == 20
    wado = doc["contenders"]["wado-rs series"]
    assert wado["runs"][0]["parts"] == 20 and wado["bytes"] > doc["series_bytes"]  # files + part headers
    assert wado["runs"][0]["samples"] >= 1 and wado["peak_rss"] >= doc["baseline_rss"] > 0
    for name in ("wado-rs series metadata", "api series zip"):
        assert doc["contenders"][name]["bytes"] > 0
    assert _servers_of(tmp_path) == []


def _servers_of(tmp_path) -> list[int]:
    """Processes still running with a DICOMFLOW_HOME inside ``tmp_path`` (the benchmark's server)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("DICOMFLOW_HOME", "").startswith(str(tmp_path)):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
