#!/usr/bin/env python3
"""Where the time of ``dicomflow import`` goes, per file and per stage (in-process, warm cache).

    python benchmarks/profile_import.py                  # 1000 slices of 512², ~1 min
    python benchmarks/profile_import.py --slices 200 --json prof.json

Each stage runs over every file of a freshly generated CT, alone, so that its cost is not hidden
by the others: header read, hashing, the store's copy, the pickled result a worker sends back,
the catalog writer's batches, the batch ``syncfs``; plus references (pydicom's full header parse,
the kernel's ``copyfile``) and the fixed costs (interpreter + Django start-up). Finally the whole
import in one process and with the worker pool, with the CPU seconds of the process tree, which
shows what the pool itself costs. CPU time is the steadier figure on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers as peers  # noqa: E402


def cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stages:
    def __init__(self, n: int):
        self.n = n
        self.rows: list[dict] = []

    def time(self, name: str, fn, per: int | None = None, note: str = "", presync: bool = True) -> object:
        """Run ``fn()`` once (after ``sync``); report ms per file (of ``per`` files, default all)."""
        per = per or self.n
        if presync:
            peers.sync()
        c0, t0 = cpu_now(), time.perf_counter()
        result = fn()
        wall, cpu = time.perf_counter() - t0, cpu_now() - c0
        row = {"stage": name, "wall_ms_per_file": round(1000 * wall / per, 3),
               "cpu_ms_per_file": round(1000 * cpu / per, 3), "note": note}
        self.rows.append(row)
        print(f"  {name:<46}{row['wall_ms_per_file']:>9.3f}{row['cpu_ms_per_file']:>9.3f}   {note}",
              file=sys.stderr, flush=True)
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=1000)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dicomflow-prof-", dir=args.workdir))
    home = work / "home"
    home.mkdir()
    os.environ["DICOMFLOW_HOME"] = str(home)
    os.environ["DICOMFLOW_FSYNC"] = "batch"
    for var in ("DATABASE_URL", "CELERY_BROKER_URL", "DICOMFLOW_IMPORT_WORKERS", "DICOMFLOW_IMPORT_BATCH"):
        os.environ.pop(var, None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dicomflow.settings")
    try:
        return run(args, work, home)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, home: Path) -> int:
    ct = work / "ct"
    subprocess.run([sys.executable, "-m", "dicomflow.testing", "ct", str(ct), "--slices", str(args.slices),
                    "--size", str(args.size)], check=True, capture_output=True)
    files = sorted(p for p in ct.iterdir() if p.is_file())
    n = len(files)
    size = sum(f.stat().st_size for f in files)
    peers.warm(files)
    print(f"{n} files of {args.size}² ({size / 1e6:.0f} MB), load average {peers.load_average()}", file=sys.stderr)
    print(f"  {'stage':<46}{'wall ms':>9}{'CPU ms':>9}   (per file)", file=sys.stderr)

    import pydicom

    from dicomflow.commands._common import setup_django
    from dicomflow.core.dicom.header import read_header
    from dicomflow.core.ingest import StoredFile, ingest_file
    from dicomflow.core.store import FileStore, sha256_of

    st = Stages(n)
    # fixed costs (whole processes)
    cmd = peers.dicomflow_cmd()
    st.time("start-up: python -c 'import dicomflow.cli'", lambda: subprocess.run(
        [sys.executable, "-c", "import dicomflow.cli"], check=True), per=1, note="ms per process")
    st.time("start-up: dicomflow stats (Django, migrations check)", lambda: subprocess.run(
        [*cmd, "stats", "--json"], check=True, capture_output=True, env=peers.dicomflow_env(home)), per=1,
        note="ms per process (first one migrates: run twice)")
    st.time("start-up: dicomflow stats, migrated", lambda: subprocess.run(
        [*cmd, "stats", "--json"], check=True, capture_output=True, env=peers.dicomflow_env(home)), per=1,
        note="ms per process")

    # per-file stages
    st.time("read bytes (page cache)", lambda: [f.read_bytes() for f in files])
    st.time("header: pydicom dcmread(stop_before_pixels)",
            lambda: [pydicom.dcmread(f, stop_before_pixels=True) for f in files], note="reference")
    st.time("header: read_header (what import uses)", lambda: [read_header(f) for f in files])
    st.time("hash: sha256_of", lambda: [sha256_of(f) for f in files])
    ref = work / "copyfile"
    ref.mkdir()
    st.time("copy: shutil.copyfile (kernel copy, reference)",
            lambda: [shutil.copyfile(f, ref / f.name) for f in files], note="reference")
    shutil.rmtree(ref)
    peers.sync()
    store_a = FileStore(work / "store-a", "never")
    st.time("store: FileStore.store_file (copy+hash+link)",
            lambda: [store_a.store_file(f, f"p/st/se/{f.name}") for f in files])
    st.time("store: store_file again (exists: hash only)",
            lambda: [store_a.store_file(f, f"p/st/se/{f.name}") for f in files])
    shutil.rmtree(store_a.root)
    peers.sync()
    store_b = FileStore(work / "store-b", "never")
    results = st.time("ingest_file (header + store, one worker's job)",
                      lambda: [ingest_file(f, f.name, store_b) for f in files])
    stored = [r for r in results if isinstance(r, StoredFile)]
    if len(stored) != n:
        print(f"only {len(stored)} of {n} files were ingested", file=sys.stderr)
        return 1
    st.time("IPC: pickle + unpickle StoredFile", lambda: [pickle.loads(pickle.dumps(r)) for r in stored], presync=False)
    st.time("fsync batch: one syncfs for all stored files",
            lambda: FileStore(store_b.root, "batch").flush(), presync=False,
            note="writes back the dirty data of the whole file system")

    setup_django()
    from django.conf import settings

    from dicomflow.catalog.services import CatalogWriter

    batch = settings.DICOMFLOW_IMPORT_BATCH
    writer = CatalogWriter(FileStore(store_b.root, "never"), "profile")
    st.time(f"catalog: CatalogWriter.record, batches of {batch}",
            lambda: [writer.record(stored[i:i + batch]) for i in range(0, n, batch)])
    writer2 = CatalogWriter(FileStore(store_b.root, "never"), "profile")
    st.time("catalog: record the same again (all duplicates)",
            lambda: [writer2.record(stored[i:i + batch]) for i in range(0, n, batch)])

    # whole import, in this process (no start-up), serial and with the pool
    from django.db import connection

    from dicomflow.intake.services import import_paths

    for workers in (1, os.cpu_count() or 2):
        with connection.cursor() as cur:  # a fresh catalog and store for each
            for table in ("catalog_imageinformation", "catalog_instance", "catalog_series", "catalog_study",
                          "catalog_patient"):
                cur.execute(f"DELETE FROM {table}")
        shutil.rmtree(settings.STORE_DIR, ignore_errors=True)
        settings.STORE_DIR.mkdir()
        for fsync in ("never",):
            os.environ["DICOMFLOW_FSYNC"] = fsync
            settings.DICOMFLOW_FSYNC = fsync
            report = st.time(f"import_paths, {workers} worker(s), fsync {fsync}",
                             lambda: import_paths([ct], workers=workers), note="whole service, CPU of the tree")
            if report.instances_new != n:
                print(f"import_paths catalogued {report.instances_new} of {n}", file=sys.stderr)
                return 1
    if args.json:
        args.json.write_text(json.dumps({"files": n, "bytes": size, "load_average": peers.load_average(),
                                         "stages": st.rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
