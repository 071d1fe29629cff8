#!/usr/bin/env python3
"""De-identification throughput and memory: dicomflow vs dicognito, pydicom deid, dicom-anonymizer.

    .venv/bin/python benchmarks/deid_bench.py                 # 1000 × 512² CT, 3 runs each
    .venv/bin/python benchmarks/deid_bench.py --slices 100 --runs 1   # quick look

One run of the script:
1. writes a synthetic CT with ``python -m dicomflow.testing ct`` into the work folder;
2. creates the peers' own virtualenv under the work folder with pip (dicognito 0.19.0, deid,
   dicom-anonymizer) — kept between runs with ``--workdir``/``--keep``;
3. reads the CT once into the page cache and ``sync``s, then times every contender, alternating
   the order each run, each run ending with ``sync``; the median is reported;
4. memory: samples every 50 ms (psutil) the resident memory of the contender's whole process tree
   (peak of the sum; forked workers share pages so the sum over-counts) and takes the largest
   single process's peak from ``wait4``;
5. prints files/s, ratios against dicomflow and the targets of issue 4 (≥ 3× dicognito, peak RSS
   of the dicomflow tree < 200 MB) as PASS/MISS.

Contenders (every command is what a user would type):
- ``dicomflow deid CT OUT --project BENCH --json`` (fresh ``DICOMFLOW_HOME``, key created before
  the timed runs; start-up included);
- ``python -m dicognito -o OUT CT`` (0.19.0's console script does not start);
- ``deid --outfolder OUT --overwrite identifiers --input CT --action all`` (default recipe);
- ``dicom-anonymizer CT OUT``.
Exit status 0 when every contender could be measured (targets missed or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

PEERS_PIP = ["dicognito==0.19.0", "deid", "dicom-anonymizer", "psutil"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def warm(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                while fh.read(1 << 20):
                    pass


class Sampler(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, total)
            self.done.wait(0.05)


def timed(cmd: list[str], env: dict, out_dir: Path) -> dict:
    """Run one contender; wall time (ending with sync), peak tree RSS, max single-process RSS."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sampler = Sampler(proc.pid)
    sampler.start()
    stdout, stderr = b"", b""
    # Drain the pipes in threads so a chatty peer cannot block; wait4 gives its rusage.
    chunks: dict[str, bytes] = {}

    def drain(name, stream):
        chunks[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    os.sync()
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    stdout, stderr = chunks.get("out", b""), chunks.get("err", b"")
    if proc.returncode != 0:
        tail = " | ".join(stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {tail}")
    return {
        "seconds": seconds,
        "files_out": count_files(out_dir),
        "rss_tree_mb": sampler.peak / 2**20,
        "rss_max_process_mb": usage.ru_maxrss / 1024,
        # user + system CPU of the contender and every process it waited for: a figure that
        # other load on the machine does not inflate the way it inflates wall time.
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "stdout": stdout.decode(errors="replace"),
    }


def make_peers_venv(work: Path) -> Path:
    venv = work / "peers-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"creating {venv} and installing {' '.join(PEERS_PIP)} ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS_PIP], check=True)
    return venv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="keep CT and peers' venv here")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--skip", nargs="*", default=[], help="contenders to leave out (dicognito, deid, dicom-anonymizer)")
    ap.add_argument("--peer-runs", type=int, default=None, help="runs for the peers (default --runs)")
    ap.add_argument("--deid-runs", type=int, default=1, help="runs for pydicom deid (about 20x slower than the others)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the figures as JSON ('-' = stdout)")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="deid-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ct = work / f"ct-{args.slices}x{args.size}"
    if not ct.exists() or count_files(ct) != args.slices:
        shutil.rmtree(ct, ignore_errors=True)
        log(f"writing {args.slices} slices of {args.size}² into {ct} ...")
        subprocess.run(
            [sys.executable, "-m", "dicomflow.testing", "ct", str(ct), "--slices", str(args.slices), "--size", str(args.size), "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    peers = {"dicognito", "deid", "dicom-anonymizer"} - set(args.skip)
    venv = make_peers_venv(work) if peers else work / "no-peers"
    peer_bin = venv / "bin"
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = dict(os.environ, DICOMFLOW_HOME=str(home))
    peer_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    dicomflow = str(Path(sys.executable).with_name("dicomflow"))
    # The project key is created outside the timed runs (first use writes it).
    subprocess.run([dicomflow, "deid", str(ct / "none"), str(work / "o-warm"), "--project", "BENCH"], env=env, capture_output=True)

    contenders = {
        "dicomflow": ([dicomflow, "deid", str(ct), "{out}", "--project", "BENCH", "--json"], env),
        "dicognito": ([str(peer_bin / "python"), "-m", "dicognito", "-o", "{out}", str(ct)], peer_env),
        "deid": ([str(peer_bin / "deid"), "--quiet", "--outfolder", "{out}", "--overwrite", "identifiers", "--input", str(ct), "--action", "all"], peer_env),
        "dicom-anonymizer": ([str(peer_bin / "dicom-anonymizer"), str(ct), "{out}"], peer_env),
    }
    for name in args.skip:
        contenders.pop(name, None)

    log("warming the page cache ...")
    warm(ct)
    os.sync()
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    errors: dict[str, str] = {}
    names = list(contenders)
    for run in range(max(args.runs, args.peer_runs or 0)):
        order = names if run % 2 == 0 else names[::-1]
        for name in order:
            if name in errors:
                continue
            limit = args.runs if name == "dicomflow" else (args.peer_runs or args.runs)
            if name == "deid":
                limit = min(limit, args.deid_runs)
            if run >= limit:
                continue
            cmd, cenv = contenders[name]
            out = work / f"out-{name}"
            try:
                r = timed([c.replace("{out}", str(out)) for c in cmd], cenv, out)
            except Exception as exc:  # a peer that fails is reported, the others still run
                errors[name] = str(exc)
                log(f"{name}: ERROR {exc}")
                continue
            if name == "dicomflow":
                doc = json.loads(r["stdout"])
                if doc["files_out"] != args.slices or doc["leak_scan"]["findings"]:
                    errors[name] = f"unexpected result {doc}"
            if r["files_out"] < args.slices:
                errors[name] = f"wrote {r['files_out']} of {args.slices} files"
            results[name].append(r)
            log(f"run {run + 1} {name}: {r['seconds']:.1f} s, tree {r['rss_tree_mb']:.0f} MB, max process {r['rss_max_process_mb']:.0f} MB")
            shutil.rmtree(out, ignore_errors=True)

    summary = {}
    for name, runs in results.items():
        if not runs:
            continue
        secs = statistics.median(r["seconds"] for r in runs)
        summary[name] = {
            "runs": len(runs),
            "median_s": round(secs, 2),
            "files_per_s": round(args.slices / secs, 1),
            "cpu_ms_per_file": round(statistics.median(r["cpu_s"] for r in runs) / args.slices * 1000, 2),
            "peak_rss_tree_mb": round(max(r["rss_tree_mb"] for r in runs), 1),
            "peak_rss_max_process_mb": round(max(r["rss_max_process_mb"] for r in runs), 1),
        }
    print(f"\nDe-identification of {args.slices} CT slices of {args.size}² on {os.cpu_count()} cores")
    print(f"{'contender':<18}{'runs':>5}{'median s':>10}{'files/s':>10}{'CPU ms/file':>13}{'RSS tree MB':>13}{'RSS max proc MB':>17}{'dicomflow ×':>13}")
    base = summary.get("dicomflow")
    for name, s in summary.items():
        ratio = base["files_per_s"] / s["files_per_s"] if base else float("nan")
        print(
            f"{name:<18}{s['runs']:>5}{s['median_s']:>10.2f}{s['files_per_s']:>10.1f}{s['cpu_ms_per_file']:>13.2f}"
            f"{s['peak_rss_tree_mb']:>13.0f}{s['peak_rss_max_process_mb']:>17.0f}{ratio:>13.2f}"
        )
    targets = {}
    if base and "dicognito" in summary:
        ratio = base["files_per_s"] / summary["dicognito"]["files_per_s"]
        targets["throughput ≥ 3× dicognito"] = (round(ratio, 2), ratio >= 3)
        cpu_ratio = summary["dicognito"]["cpu_ms_per_file"] / base["cpu_ms_per_file"]
        targets["(info) CPU per file, dicognito ÷ dicomflow"] = (round(cpu_ratio, 2), True)
        load = os.getloadavg()[0]
        targets[f"(info) load average during the run ({os.cpu_count()} cores)"] = (round(load, 2), load < os.cpu_count() + 0.5)
    if base:
        targets["peak RSS (tree) < 200 MB"] = (base["peak_rss_tree_mb"], base["peak_rss_tree_mb"] < 200)
    print("\nTargets (issue 4):")
    for label, (value, ok) in targets.items():
        print(f"  {'PASS' if ok else 'MISS'}  {label}: {value}")
    if errors:
        print("\nERRORS:")
        for name, msg in errors.items():
            print(f"  {name}: {msg}")
    if args.json_out:
        doc = json.dumps({"slices": args.slices, "size": args.size, "results": summary, "targets": {k: v[0] for k, v in targets.items()}, "errors": errors}, indent=2)
        if args.json_out == "-":
            print(doc)
        else:
            Path(args.json_out).write_text(doc)
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
