"""The import benchmark runs end to end (tiny: 20 slices, 1 run) with every peer that is installed.

It checks that the script works — every contender measured or skipped for a stated reason, the
JSON document complete, every process it started gone — not the numbers.
"""

import json
import subprocess
import sys
import time
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


def _postgres_server() -> str | None:
    """A PostgreSQL server to create the benchmark's own database on: the suite's, else the local one."""
    import os

    import psycopg

    from urllib.parse import urlsplit, urlunsplit

    url = os.environ.get("DATABASE_URL", "")
    url = url if url.startswith(("postgres://", "postgresql://")) else "postgres://postgres@127.0.0.1:5432/postgres"
    # the suite's own database (DATABASE_URL names it; pytest-django uses test_<name>) need not exist:
    # the server's maintenance database is where the benchmark creates its own
    url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return None
    return url


@pytest.mark.slow
def test_catalog_bench_tiny_run(tmp_path):
    """The catalog benchmark end to end at a tiny scale: its own database created and dropped, every
    scenario measured through HTTP with a query count, the EXPLAIN of the slowest written."""
    import os
    import uuid

    import psycopg

    server = _postgres_server()
    if server is None:
        if os.environ.get("DICOMFLOW_REQUIRE_TOOLS") == "1":
            pytest.fail("the catalog benchmark needs a PostgreSQL server (127.0.0.1:5432 or DATABASE_URL)")
        pytest.skip("no PostgreSQL server answers (127.0.0.1:5432 or DATABASE_URL)")
    database = f"catbench_smoke_{uuid.uuid4().hex[:8]}"
    out = tmp_path / "catalog.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["PG_URL"] = server
    before = _descendants_now()
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "catalog_bench.py"), "--instances", "1500",
                          "--requests", "3", "--database", database, "--json", str(out)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["shape"]["instances"] == 1500 and doc["shape"]["studies"] >= 1
    names = {(r["name"], r["persona"]) for r in doc["results"]}
    for persona in ("admin", "member"):
        for name in ("page series ?status=", "api study rt-tree", "page jobs", "lookup autocomplete",
                     "api patients ?q=ID prefix"):
            assert (name, persona) in names
    for r in doc["results"]:
        assert r["requests"] == 3 and 0 < r["p50_ms"] <= r["p95_ms"]
        assert r["queries"] and min(r["queries"]) > 0  # counted by the wrapped app, per request
    assert doc["explain"] and all("Execution Time" in plan for plan in doc["explain"].values())
    assert "PASS" in res.stdout or "MISS" in res.stdout
    with psycopg.connect(server, autocommit=True) as conn:  # dropped again
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is None
    time.sleep(0.5)
    assert _descendants_now() - before == set()  # gunicorn and its workers are gone
