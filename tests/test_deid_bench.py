"""Smoke test of benchmarks/deid_bench.py: it runs end to end (tiny CT, dicomflow only, no peers
installed) and reports figures; it checks that the script works, not the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "deid_bench.py"


def test_deid_bench_runs_tiny(tmp_path):
    out = tmp_path / "figures.json"
    res = subprocess.run(
        [sys.executable, str(BENCH), "--slices", "6", "--size", "32", "--runs", "1", "--workdir", str(tmp_path / "w"),
         "--skip", "dicognito", "deid", "dicom-anonymizer", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(out.read_text())
    figures = doc["results"]["dicomflow"]
    assert figures["runs"] == 1 and figures["files_per_s"] > 0 and figures["peak_rss_tree_mb"] > 10
    assert "peak RSS (tree) < 200 MB" in doc["targets"]
    assert "dicomflow" in res.stdout and not (tmp_path / "w" / "peers-venv").exists()
