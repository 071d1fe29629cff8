#!/usr/bin/env python3
"""Ingest at scale: import of many files and C-STORE into PostgreSQL with 2 import workers, against
the SQLite default, with the peak memory of every process.

    PG_URL=postgres://postgres@127.0.0.1:5432/postgres python benchmarks/ingest_scale_bench.py \\
        [--files 10000] [--cstore-files 5000] [--size 128] [--workers 2]

Generates ``--files`` CT slices (series of 200 slices, ``--size``² pixels, one patient each) once,
then for each catalog — SQLite (the embedded default, a fresh ``DICOMFLOW_HOME``) and PostgreSQL
(a fresh database ``--database`` on the server of ``PG_URL``, dropped afterwards):

  import    ``dicomflow import DIR --json`` with ``DICOMFLOW_IMPORT_WORKERS=--workers``
  C-STORE   DCMTK ``storescu`` of the first ``--cstore-files`` files → ``dicomflow scp``, timed
            until every instance is in the catalog

and reports files/s and the largest resident memory of any single process of the run (target
< 300 MB) plus the peak of the whole process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers as peers  # noqa: E402

SERIES_SLICES = 200
MB = 1024 * 1024


def with_database(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


class Sampler:
    """Peak RSS of a process tree, sampled every ``interval`` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.max_process = 0
        self.max_tree = 0
        self.max_processes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                members = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            tree = 0
            for p in members:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                tree += rss
                self.max_process = max(self.max_process, rss)
            self.max_tree = max(self.max_tree, tree)
            self.max_processes = max(self.max_processes, len(members))
            self._done.wait(self.interval)

    def stop(self) -> dict:
        self._done.set()
        self._thread.join()
        return {"max_process_rss_mb": round(self.max_process / MB, 1), "peak_tree_rss_mb": round(self.max_tree / MB, 1),
                "processes": self.max_processes}


def generate(out: Path, files: int, size: int) -> list[Path]:
    """Series of 200 slices (the last one shorter), one patient each, via ``python -m dicomflow.testing ct``."""
    series_dirs = []
    k = 0
    while files > 0:
        n = min(SERIES_SLICES, files)
        folder = out / f"s{k:04d}"
        peers.run_checked([sys.executable, "-m", "dicomflow.testing", "ct", str(folder), "--slices", str(n),
                           "--size", str(size), "--seed", str(1000 + k), "--patient-id", f"ING{k:05d}"],
                          timeout=3600, what="python -m dicomflow.testing ct")
        series_dirs.append(folder)
        files -= n
        k += 1
    return series_dirs


def catalog_count(kind: str, home: Path, pg_url: str | None) -> int:
    if kind == "sqlite":
        return peers.catalog_instances(home)
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return conn.execute("SELECT count(*) FROM catalog_instance").fetchone()[0]


def environment(kind: str, home: Path, pg_url: str | None, workers: int) -> dict:
    env = peers.dicomflow_env(home)
    env["DICOMFLOW_IMPORT_WORKERS"] = str(workers)
    if kind == "postgresql":
        env["DATABASE_URL"] = pg_url
    return env


def run_import(kind: str, home: Path, pg_url: str | None, workers: int, source: Path, files: int) -> dict:
    env = environment(kind, home, pg_url, workers)
    peers.run_checked([*peers.dicomflow_cmd(), "stats", "--json"], env=env, timeout=600, what="migrate")
    peers.sync()
    started = time.perf_counter()
    proc = subprocess.Popen([*peers.dicomflow_cmd(), "import", str(source), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid)
    out, err = proc.communicate(timeout=7200)
    memory = sampler.stop()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise peers.PeerError(f"dicomflow import failed ({proc.returncode}): {peers.last_lines(err)}")
    count = catalog_count(kind, home, pg_url)
    if count != files:
        raise peers.PeerError(f"{kind}: {count} instances catalogued, expected {files}")
    return {"files": files, "seconds": round(elapsed, 1), "files_per_s": round(files / elapsed, 1), **memory}


def run_cstore(kind: str, home: Path, pg_url: str | None, workers: int, folders: list[Path], files: int) -> dict:
    env = environment(kind, home, pg_url, workers)
    port = peers.free_port()
    log = home / "scp.log"
    scp = peers.spawn([*peers.dicomflow_cmd(), "scp", "--port", str(port), "--aet", "DICOMFLOW"], env=env, log=log)
    try:
        peers.wait_for_echo(port, "DICOMFLOW", scp, log=log)
        before = catalog_count(kind, home, pg_url)
        sampler = Sampler(scp.pid)
        started = time.perf_counter()
        senders = [threading.Thread(target=peers.storescu, args=(port, "DICOMFLOW", folder, True)) for folder in folders]
        for t in senders:  # one association per series, in sequence (a modality sending a study)
            t.start()
            t.join()
        while catalog_count(kind, home, pg_url) - before < files:
            if time.perf_counter() - started > 3600:
                raise peers.PeerError("C-STORE: not every instance was catalogued within an hour")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        memory = sampler.stop()
    finally:
        peers.stop(scp)
    return {"files": files, "seconds": round(elapsed, 1), "files_per_s": round(files / elapsed, 1), **memory}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--cstore-files", type=int, default=5_000)
    ap.add_argument("--size", type=int, default=128, help="rows = columns of the slices (default 128)")
    ap.add_argument("--workers", type=int, default=2, help="DICOMFLOW_IMPORT_WORKERS (default 2)")
    ap.add_argument("--database", default="dicomflow_ingest_bench")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    server = os.environ.get("PG_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    pg_url = with_database(server, args.database)
    if args.cstore_files % SERIES_SLICES and args.cstore_files > SERIES_SLICES:
        ap.error(f"--cstore-files: a multiple of {SERIES_SLICES} (whole series)")
    peers.install_cleanup()
    work = Path(tempfile.mkdtemp(prefix="ingest-scale-"))
    import psycopg

    report = {"files": args.files, "cstore_files": args.cstore_files, "size": args.size, "workers": args.workers,
              "cpus": os.cpu_count(), "load_average": peers.load_average(), "results": {}}
    try:
        print(f"generating {args.files} slices of {args.size}² ...", flush=True)
        folders = generate(work / "in", args.files, args.size)
        cstore_folders = []
        n = 0
        for folder in folders:
            if n >= args.cstore_files:
                break
            cstore_folders.append(folder)
            n += peers.count_files(folder)
        peers.warm(sorted(p for p in (work / "in").rglob("*") if p.is_file()))
        kinds = ([] if args.skip_sqlite else ["sqlite"]) + ["postgresql"]
        for kind in kinds:
            for what in ("import", "cstore"):
                home = work / f"home-{kind}-{what}"
                if kind == "postgresql":
                    with psycopg.connect(server, autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
                        conn.execute(f'CREATE DATABASE "{args.database}"')
                home.mkdir(parents=True)
                if what == "import":
                    result = run_import(kind, home, pg_url, args.workers, work / "in", args.files)
                else:
                    peers.run_checked([*peers.dicomflow_cmd(), "stats", "--json"],
                                      env=environment(kind, home, pg_url, args.workers), timeout=600, what="migrate")
                    result = run_cstore(kind, home, pg_url, args.workers, cstore_folders, n)
                report["results"][f"{what}/{kind}"] = result
                print(f"{what:<7} {kind:<10} {result['files']:>6} files {result['seconds']:>7.1f} s "
                      f"{result['files_per_s']:>7.1f} files/s  largest process {result['max_process_rss_mb']:.0f} MB "
                      f"(tree {result['peak_tree_rss_mb']:.0f} MB, {result['processes']} processes)", flush=True)
                shutil.rmtree(home, ignore_errors=True)
        res = report["results"]
        for what in ("import", "cstore"):
            if f"{what}/sqlite" in res:
                ratio = res[f"{what}/postgresql"]["files_per_s"] / res[f"{what}/sqlite"]["files_per_s"]
                report[f"{what}_postgresql_vs_sqlite"] = round(ratio, 2)
                print(f"{what}: PostgreSQL at {ratio:.2f}× the SQLite default's throughput")
        flat = all(r["max_process_rss_mb"] < 300 for r in res.values())
        report["memory_target_met"] = flat
        print(("PASS" if flat else "MISS") + ": every process below 300 MB")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return 0
    finally:
        try:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        except psycopg.Error:
            pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
