#!/usr/bin/env python3
"""Import and C-STORE throughput of dicomflow against peers measured in the same run.

    python benchmarks/import_bench.py                      # 1000-slice 512×512 CT, 3 runs (~10 min)
    python benchmarks/import_bench.py --slices 50 --runs 1 # quick check (< 1 min)

Contenders (each run alternates their order; the figure is the median of the runs):
  import/batch   ``dicomflow import DIR --json``, fresh DICOMFLOW_HOME, DICOMFLOW_FSYNC=batch (default)
  import/never   the same with DICOMFLOW_FSYNC=never (durability left to the OS)
  cp -r          ``cp -r DIR DEST`` on the same file system: the floor for "copy the bytes once"
  orthanc        Debian's Orthanc, fresh storage, REST ``POST /instances`` from 2 concurrent clients
  C-STORE        DCMTK ``storescu`` → ``dicomflow scp`` (until every instance is in the catalog)
                 vs → DCMTK ``storescp -od``, with TCP_NODELAY=1 for both ends and without
  memory         peak RSS of the ``dicomflow import`` process tree over 10 series × --slices small files

Each timed run starts after ``sync`` with warm input files and ends with ``sync``; starting peers
and migrating a fresh catalog are not timed. See benchmarks/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers as peers  # noqa: E402

TARGETS = {
    "import_vs_orthanc": 2.0,
    "import_vs_cp": 0.5,
    "cstore_vs_storescp": 0.5,
    "peak_rss_mb": 300.0,
    "rss_growth_mb": 50.0,
}
MIN_FLAT_SECONDS = 5.0  # a steady part shorter than this cannot show growth


# --- data ---------------------------------------------------------------------------------------------
def generate_ct(out: Path, slices: int, size: int) -> list[Path]:
    """The synthetic CT (``python -m dicomflow.testing ct``), written once per benchmark run."""
    res = peers.run_checked(
        [sys.executable, "-m", "dicomflow.testing", "ct", str(out), "--slices", str(slices), "--size", str(size)],
        timeout=3600, what="python -m dicomflow.testing ct",
    )
    summary = json.loads(res.stdout)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    if len(files) != slices or summary.get("instances") != slices:
        raise peers.PeerError(f"generator wrote {len(files)} files, expected {slices}")
    return files


def _same_length_uid(uid: str, rng: random.Random) -> str:
    """A new random ``2.25.<n>`` UID exactly as long as ``uid`` (so raw bytes can be swapped)."""
    digits = len(uid) - len("2.25.")
    return "2.25." + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))


def clone_series(paths: list[Path], out: Path, patient_id: str, old_patient_id: str, seed: int) -> None:
    """Copy a synthetic series as another patient's with new study/series/frame/instance UIDs.

    Swaps equal-length byte strings in the raw files (the synthetic UIDs are ``2.25.<n>``), which is
    ~100× faster than a pydicom read-modify-write; element lengths and padding stay valid.
    """
    import pydicom

    if len(patient_id) != len(old_patient_id):
        raise ValueError("patient IDs must have the same length")
    rng = random.Random(seed)
    out.mkdir(parents=True)
    head = pydicom.dcmread(paths[0], stop_before_pixels=True)
    shared = {str(head[k].value): None for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")}
    swaps = [(old.encode(), _same_length_uid(old, rng).encode()) for old in shared]
    swaps.append((old_patient_id.encode(), patient_id.encode()))
    for path in paths:
        data = path.read_bytes()
        sop = path.name.removeprefix("CT.").removesuffix(".dcm")
        new_sop = _same_length_uid(sop, rng)
        data = data.replace(sop.encode(), new_sop.encode())
        for old, new in swaps:
            data = data.replace(old, new)
        (out / f"CT.{new_sop}.dcm").write_bytes(data)


# --- contenders ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.ct = work / "input" / "ct"
        self.files: list[Path] = []
        self.results: dict[str, dict] = {}
        self.counter = 0
        self.load_start = peers.load_average()

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def scratch(self, name: str) -> Path:
        self.counter += 1
        path = self.work / "runs" / f"{self.counter:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def discard(self, path: Path) -> None:
        if not self.args.keep:
            shutil.rmtree(path, ignore_errors=True)

    def record(self, name: str, seconds: float | None = None, cpu: float | None = None, *,
               error: str | None = None, skipped: str | None = None) -> None:
        entry = self.results.setdefault(name, {"seconds": [], "cpu_seconds": [], "files": len(self.files)})
        if seconds is not None:
            entry["seconds"].append(seconds)
            entry["cpu_seconds"].append(cpu)
            self.log(f"{name}: {len(self.files) / seconds:8.1f} files/s ({seconds:.2f} s, CPU {cpu:.2f} s, "
                     f"load {peers.load_average()})")
        if error:
            entry.setdefault("errors", []).append(error)
            self.log(f"{name}: ERROR {error}")
        if skipped:
            entry["skipped"] = skipped

    def attempt(self, name: str, fn: Callable[[], tuple[float, float]]) -> None:
        if self.results.get(name, {}).get("skipped"):
            return
        try:
            self.record(name, *fn())
        except peers.Unavailable as exc:
            self.record(name, skipped=str(exc))
            self.log(f"{name}: skipped ({exc})")
        except Exception as exc:  # keep measuring the others; the error is reported
            self.record(name, error=f"{exc.__class__.__name__}: {exc}")
            if self.args.verbose:
                traceback.print_exc()

    # file copies ----------------------------------------------------------------------------
    def run_cp(self) -> tuple[float, float]:
        dest = self.scratch("cp")
        target = dest / "ct"
        peers.sync()
        c0, t0 = peers.cpu_snapshot(), time.perf_counter()
        peers.run_checked(["cp", "-r", str(self.ct), str(target)], what="cp -r")
        peers.sync()
        elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot() - c0
        copied = peers.count_files(target)
        self.discard(dest)
        if copied != len(self.files):
            raise peers.PeerError(f"cp -r copied {copied} of {len(self.files)} files")
        return elapsed, cpu

    def run_import(self, fsync: str) -> tuple[float, float]:
        home = self.scratch(f"import-{fsync}") / "home"
        peers.prepare_home(home, self.work)
        cmd = [*peers.dicomflow_cmd(), "import", str(self.ct), "--json", "--quiet"]
        env = peers.dicomflow_env(home, fsync)
        peers.sync()
        c0, t0 = peers.cpu_snapshot(), time.perf_counter()
        res = peers.run_checked(cmd, env=env, what="dicomflow import")
        peers.sync()
        elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot() - c0
        doc = json.loads(res.stdout)
        self.discard(home.parent)
        if doc.get("instances_new") != len(self.files):
            raise peers.PeerError(f"dicomflow import catalogued {doc.get('instances_new')} of {len(self.files)} "
                                  f"(ignored: {doc.get('ignored', [])[:3]}, conflicts: {doc.get('conflicts', [])[:3]})")
        return elapsed, cpu

    def run_orthanc(self) -> tuple[float, float]:
        root = self.scratch("orthanc")
        try:
            with peers.Orthanc(root) as orthanc:
                pids = (orthanc.proc.pid,)
                peers.sync()
                c0, t0 = peers.cpu_snapshot(pids), time.perf_counter()
                orthanc.upload(self.files, clients=2)
                peers.sync()
                elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot(pids) - c0
                stored = orthanc.instance_count()
            if stored != len(self.files):
                raise peers.PeerError(f"Orthanc holds {stored} of {len(self.files)} instances")
            return elapsed, cpu
        finally:
            self.discard(root)

    # C-STORE ---------------------------------------------------------------------------------
    def run_storescp(self, nodelay: bool) -> tuple[float, float]:
        binary = peers.tool("storescp")
        if not binary or not peers.tool("storescu"):
            raise peers.Unavailable("DCMTK (storescp/storescu) is not installed")
        root = self.scratch("storescp")
        out = root / "received"
        out.mkdir()
        port = peers.free_port()
        log = root / "storescp.log"
        proc = peers.spawn([binary, "-od", str(out), str(port)], env=peers.dcmtk_env(nodelay), log=log)
        try:
            peers.wait_for_echo(port, "STORESCP", proc, log=log)
            peers.sync()
            c0, t0 = peers.cpu_snapshot((proc.pid,)), time.perf_counter()
            peers.storescu(port, "STORESCP", self.ct, nodelay)
            peers.sync()
            elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot((proc.pid,)) - c0
        finally:
            peers.stop(proc)
        received = peers.count_files(out)
        self.discard(root)
        if received != len(self.files):
            raise peers.PeerError(f"storescp wrote {received} of {len(self.files)} files")
        return elapsed, cpu

    def run_scp(self, nodelay: bool) -> tuple[float, float]:
        if not peers.tool("storescu"):
            raise peers.Unavailable("DCMTK storescu is not installed")
        if not peers.dicomflow_has_command("scp"):
            raise peers.Unavailable("this dicomflow has no 'scp' command yet")
        root = self.scratch("scp")
        home = root / "home"
        peers.prepare_home(home, self.work)
        port = peers.free_port()
        log = root / "scp.log"
        env = peers.dicomflow_env(home, "batch", nodelay=nodelay)
        proc = peers.spawn([*peers.dicomflow_cmd(), "scp", "--port", str(port), "--aet", "BENCH"], env=env, log=log)
        n = len(self.files)
        try:
            peers.wait_for_echo(port, "BENCH", proc, timeout=120, log=log)
            peers.sync()
            c0, t0 = peers.cpu_snapshot((proc.pid,)), time.perf_counter()
            peers.storescu(port, "BENCH", self.ct, nodelay)
            deadline = time.monotonic() + 300
            while peers.catalog_instances(home) < n:  # the receiver catalogues in batches
                if proc.poll() is not None:
                    raise peers.PeerError(f"dicomflow scp exited with status {proc.returncode}" + peers._tail(log))
                if time.monotonic() > deadline:
                    raise peers.PeerError(f"only {peers.catalog_instances(home)} of {n} instances catalogued "
                                          "300 s after storescu finished" + peers._tail(log))
                time.sleep(0.02)
            peers.sync()
            elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot((proc.pid,)) - c0
            stats = peers.dicomflow_stats(home)  # the contract's view must agree with the poll
        finally:
            peers.stop(proc)
        self.discard(root)
        if stats.get("instances") != n:
            raise peers.PeerError(f"dicomflow stats reports {stats.get('instances')} of {n} instances")
        return elapsed, cpu

    def run_minimal_scp(self, nodelay: bool) -> tuple[float, float]:
        """Reference: a bare pynetdicom receiver (``_minimal_scp.py``) fed by the same storescu."""
        if not peers.tool("storescu"):
            raise peers.Unavailable("DCMTK storescu is not installed")
        root = self.scratch("pynetdicom")
        out = root / "received"
        port = peers.free_port()
        log = root / "scp.log"
        script = Path(__file__).resolve().parent / "_minimal_scp.py"
        proc = peers.spawn([sys.executable, str(script), str(port), str(out), "BENCH"],
                           env=peers.dcmtk_env(nodelay), log=log)
        try:
            peers.wait_for_echo(port, "BENCH", proc, log=log)
            peers.sync()
            c0, t0 = peers.cpu_snapshot((proc.pid,)), time.perf_counter()
            peers.storescu(port, "BENCH", self.ct, nodelay)
            peers.sync()
            elapsed, cpu = time.perf_counter() - t0, peers.cpu_snapshot((proc.pid,)) - c0
        finally:
            peers.stop(proc)
        received = len(list(out.glob("*.dcm")))
        self.discard(root)
        if received != len(self.files):
            raise peers.PeerError(f"the minimal pynetdicom receiver wrote {received} of {len(self.files)} files")
        return elapsed, cpu

    # memory ------------------------------------------------------------------------------------
    def run_memory(self) -> dict:
        series, slices = self.args.mem_series, self.args.slices
        src = self.work / "input" / "memory"
        self.log(f"memory: generating {series} series × {slices} slices of {self.args.mem_size}² ...")
        from dicomflow.testing import synth  # in-process: generator start-ups would dominate quick runs

        first = synth.write_image_series(src / "series00", synth.PatientSpec(patient_id="BENCHMEM00"),
                                         "CT", slices, self.args.mem_size, self.args.mem_size)
        for k in range(1, series):  # copies under new UIDs: much faster than drawing the phantom again
            clone_series(first.paths, src / f"series{k:02d}", f"BENCHMEM{k:02d}", "BENCHMEM00", seed=k)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        if len(files) != series * slices:
            raise peers.PeerError(f"generator wrote {len(files)} files, expected {series * slices}")
        peers.warm(files)
        home = self.scratch("memory") / "home"
        peers.prepare_home(home, self.work)
        peers.sync()
        res, elapsed, trace = peers.run_sampling_memory(
            [*peers.dicomflow_cmd(), "import", str(src), "--json", "--quiet"], env=peers.dicomflow_env(home))
        if res.returncode != 0:
            raise peers.PeerError("dicomflow import failed: " + peers.last_lines(res.stderr))
        doc = json.loads(res.stdout)
        if doc.get("instances_new") != len(files):
            raise peers.PeerError(f"imported {doc.get('instances_new')} of {len(files)} files")
        quarters = [q / 2**20 for q in trace.quarter_peaks()]
        self.discard(home.parent)
        if not self.args.keep:
            shutil.rmtree(src, ignore_errors=True)
        return {
            "files": len(files),
            "seconds": round(elapsed, 3),
            "files_per_s": round(len(files) / elapsed, 1),
            "peak_tree_rss_mb": round(trace.peak_tree_rss / 2**20, 1),
            "peak_tree_pss_mb": round(trace.peak_tree_pss / 2**20, 1),
            "peak_process_rss_mb": round(trace.max_process_rss / 2**20, 1),
            "processes": trace.max_processes,
            "quarter_peak_rss_mb": [round(q, 1) for q in quarters],
            # flat = over the steady part (full process tree), the last quarter's peak is not above the
            # first's; a steady part too short to tell gives None
            "steady_seconds": round(trace.steady_seconds(), 1),
            "rss_growth_mb": (round(quarters[3] - quarters[0], 1)
                              if trace.steady_seconds() >= MIN_FLAT_SECONDS else None),
            "samples": len(trace.tree_rss),
        }


# --- reporting -----------------------------------------------------------------------------------------
def summarise(results: dict[str, dict]) -> None:
    for entry in results.values():
        runs = entry.get("seconds", [])
        if runs:
            med = statistics.median(runs)
            entry["median_s"] = round(med, 3)
            entry["files_per_s"] = round(entry["files"] / med, 1)
            entry["runs_files_per_s"] = [round(entry["files"] / s, 1) for s in runs]
            entry["seconds"] = [round(s, 3) for s in runs]
            cpu = statistics.median(entry["cpu_seconds"])
            entry["cpu_ms_per_file"] = round(1000 * cpu / entry["files"], 2)
            entry["cpu_seconds"] = [round(c, 3) for c in entry["cpu_seconds"]]


def fps(results: dict, name: str) -> float | None:
    return results.get(name, {}).get("files_per_s")


def ratio(a: float | None, b: float | None) -> float | None:
    return float(f"{a / b:.3g}") if a and b else None  # 3 significant digits: tiny runs give tiny ratios


def build_report(bench: Bench, memory: dict | None, memory_error: str | None, started: float) -> dict:
    r = bench.results
    summarise(r)
    ratios = {
        "import_vs_orthanc": ratio(fps(r, "import/batch"), fps(r, "orthanc")),
        "import_never_vs_orthanc": ratio(fps(r, "import/never"), fps(r, "orthanc")),
        "import_vs_cp": ratio(fps(r, "import/batch"), fps(r, "cp -r")),
        "import_never_vs_cp": ratio(fps(r, "import/never"), fps(r, "cp -r")),
        "cstore_vs_storescp": ratio(fps(r, "dicomflow scp/nodelay"), fps(r, "storescp/nodelay")),
        "cstore_vs_storescp_nagle": ratio(fps(r, "dicomflow scp/nagle"), fps(r, "storescp/nagle")),
        "cstore_vs_bare_pynetdicom": ratio(fps(r, "dicomflow scp/nodelay"), fps(r, "pynetdicom bare/nodelay")),
        "bare_pynetdicom_vs_storescp": ratio(fps(r, "pynetdicom bare/nodelay"), fps(r, "storescp/nodelay")),
    }
    targets = []

    def target(name: str, value: float | None, goal: float, higher_is_better: bool = True, what: str = "") -> None:
        if value is None:
            status = "n/a"
        elif higher_is_better:
            status = "PASS" if value >= goal else "MISS"
        else:
            status = "PASS" if value < goal else "MISS"
        targets.append({"name": name, "what": what, "value": value,
                        "target": (">= " if higher_is_better else "< ") + str(goal), "status": status})

    target("import_vs_orthanc", ratios["import_vs_orthanc"], TARGETS["import_vs_orthanc"],
           what="dicomflow import (fsync batch) / Orthanc REST")
    target("import_vs_cp", ratios["import_vs_cp"], TARGETS["import_vs_cp"], what="dicomflow import (fsync batch) / cp -r")
    target("cstore_vs_storescp", ratios["cstore_vs_storescp"], TARGETS["cstore_vs_storescp"],
           what="dicomflow scp / storescp, TCP_NODELAY=1")
    target("cstore_vs_storescp_nagle", ratios["cstore_vs_storescp_nagle"], TARGETS["cstore_vs_storescp"],
           what="dicomflow scp / storescp, Nagle on")
    target("peak_rss_mb", memory.get("peak_tree_rss_mb") if memory else None, TARGETS["peak_rss_mb"], False,
           what="peak RSS of the import process tree (MB)")
    target("rss_growth_mb", memory.get("rss_growth_mb") if memory else None, TARGETS["rss_growth_mb"], False,
           what="RSS growth, last vs first quarter, steady part (MB)")
    errors = {name: e["errors"] for name, e in r.items() if e.get("errors")}
    if memory_error:
        errors["memory"] = [memory_error]
    return {
        "config": {"slices": bench.args.slices, "size": bench.args.size, "runs": bench.args.runs,
                   "files": len(bench.files), "bytes": sum(p.stat().st_size for p in bench.files) if bench.files else 0,
                   "mem_series": bench.args.mem_series, "mem_size": bench.args.mem_size},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_start": bench.load_start, "load_average_end": peers.load_average()},
        "contenders": r,
        "ratios": ratios,
        "memory": memory,
        "targets": targets,
        "errors": errors,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def print_table(report: dict, out=sys.stdout) -> None:
    cfg = report["config"]
    lines = [
        "",
        f"dicomflow import benchmark — {cfg['files']} files of {cfg['size']}×{cfg['size']} "
        f"({cfg['bytes'] / 1e6:.0f} MB), median of {cfg['runs']} alternating run(s), {report['machine']['cpus']} CPUs",
        "",
        f"{'contender':<24}{'files/s':>10}{'median s':>10}{'CPU ms/file':>13}   runs (files/s)",
        "-" * 80,
    ]
    for name, e in report["contenders"].items():
        if e.get("skipped"):
            lines.append(f"{name:<24}{'skipped':>10}            {e['skipped']}")
        elif "files_per_s" in e:
            runs = ", ".join(f"{v:.0f}" for v in e["runs_files_per_s"])
            lines.append(f"{name:<24}{e['files_per_s']:>10.1f}{e['median_s']:>10.2f}{e['cpu_ms_per_file']:>13.2f}   {runs}")
        else:
            lines.append(f"{name:<24}{'error':>10}            {e.get('errors', ['?'])[0][:44]} (see ERRORS)")
    mem = report["memory"]
    if mem:
        lines += [
            "",
            f"memory: dicomflow import of {mem['files']} files ({mem['files_per_s']:.0f} files/s): peak RSS of the "
            f"process tree {mem['peak_tree_rss_mb']:.0f} MB (PSS {mem['peak_tree_pss_mb']:.0f} MB; {mem['processes']} "
            f"processes, largest {mem['peak_process_rss_mb']:.0f} MB); per-quarter peaks "
            + " / ".join(f"{q:.0f}" for q in mem["quarter_peak_rss_mb"]) + " MB",
        ]
    lines += ["", f"{'target':<28}{'value':>8}  {'goal':<8}{'':2}status   what", "-" * 72]
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"{t['name']:<28}{value:>8}  {t['target']:<10}{t['status']:<8} {t['what']}")
    other = {k: v for k, v in report["ratios"].items() if k not in {t["name"] for t in report["targets"]}}
    lines.append("also: " + ", ".join(f"{k} {v if v is not None else '-'}" for k, v in other.items()))
    if report["errors"]:
        lines += ["", "ERRORS:"] + [f"  {k}: {v[0]}" for k, v in report["errors"].items()]
    lines.append(f"\n(wall time {report['wall_seconds']:.0f} s)")
    print("\n".join(lines), file=out)


# --- main ----------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=1000, help="CT slices (default 1000, ~500 MB at 512²)")
    p.add_argument("--size", type=int, default=512, help="rows = columns of the CT (default 512)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per contender; the median is reported")
    p.add_argument("--workdir", type=Path, help="work folder (default: a new temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the work folder and every run's output")
    p.add_argument("--skip-orthanc", action="store_true")
    p.add_argument("--skip-cstore", action="store_true")
    p.add_argument("--skip-nagle", action="store_true", help="C-STORE only with TCP_NODELAY=1")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-pynetdicom", action="store_true",
                   help="leave out the bare pynetdicom receiver (reference for dicomflow scp)")
    p.add_argument("--mem-series", type=int, default=10,
                   help="memory run: series of --slices small slices each (default 10 → 10,000 files)")
    p.add_argument("--mem-size", type=int, default=64, help="memory run: rows = columns (default 64)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE ('-': stdout)")
    p.add_argument("--verbose", action="store_true", help="tracebacks of contender errors")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs < 1 or args.slices < 1:
        print("--runs and --slices must be at least 1", file=sys.stderr)
        return 2
    started = time.perf_counter()
    peers.install_cleanup()
    own_workdir = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="dicomflow-bench-")) if own_workdir else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, work)
    memory = memory_error = None
    try:
        bench.log(f"work folder {work}; generating {args.slices} slices of {args.size}² ...")
        bench.files = generate_ct(bench.ct, args.slices, args.size)
        bench.log(f"warming {peers.warm(bench.files) / 1e6:.0f} MB into the page cache")
        peers.sync()

        contenders: list[tuple[str, Callable[[], float]]] = [
            ("import/batch", lambda: bench.run_import("batch")),
            ("cp -r", bench.run_cp),
            ("import/never", lambda: bench.run_import("never")),
        ]
        if not args.skip_orthanc:
            contenders.append(("orthanc", bench.run_orthanc))
        cstore: list[tuple[str, Callable[[], float]]] = []
        if not args.skip_cstore:
            modes = [True] if args.skip_nagle else [True, False]
            for nodelay in modes:
                tag = "nodelay" if nodelay else "nagle"
                cstore += [
                    (f"dicomflow scp/{tag}", lambda nd=nodelay: bench.run_scp(nd)),
                    (f"storescp/{tag}", lambda nd=nodelay: bench.run_storescp(nd)),
                ]
                if nodelay and not args.skip_pynetdicom:
                    cstore.append((f"pynetdicom bare/{tag}", lambda nd=nodelay: bench.run_minimal_scp(nd)))
        for group in (contenders, cstore):
            for name, _ in group:
                bench.results.setdefault(name, {"seconds": [], "cpu_seconds": [], "files": len(bench.files)})
        for i in range(args.runs):
            bench.log(f"run {i + 1}/{args.runs}")
            for group in (contenders, cstore):
                if not group:
                    continue
                k = i % len(group)  # alternate: each run starts with a different contender
                for name, fn in group[k:] + group[:k]:
                    bench.attempt(name, fn)
        if not args.skip_memory:
            try:
                memory = bench.run_memory()
                bench.log(f"memory: peak tree RSS {memory['peak_tree_rss_mb']} MB over {memory['files']} files")
            except Exception as exc:
                memory_error = f"{exc.__class__.__name__}: {exc}"
                bench.log(f"memory: ERROR {memory_error}")
        report = build_report(bench, memory, memory_error, started)
    finally:
        peers.stop_all()
        if args.keep:
            bench.log(f"kept {work}")
        elif own_workdir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for sub in ("input", "runs"):
                shutil.rmtree(work / sub, ignore_errors=True)
    to_stdout = args.json is not None and str(args.json) == "-"
    print_table(report, sys.stderr if to_stdout else sys.stdout)
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            args.json.write_text(text + "\n")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
