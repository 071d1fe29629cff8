#!/usr/bin/env python3
"""WADO-RS streaming: the server's memory while a client retrieves a 1000-slice series.

    .venv/bin/python benchmarks/wado_bench.py                       # 1000 × 512² CT (≈ 525 MB), 3 runs
    .venv/bin/python benchmarks/wado_bench.py --slices 20 --size 64 --runs 1   # quick check

One run of the script:
1. writes a synthetic CT with ``python -m dicomflow.testing ct`` into the work folder and imports
   it with ``dicomflow import`` into a fresh ``DICOMFLOW_HOME`` (SQLite); creates a user with the
   clinical-pool permission and an API key (``dicomflow user create`` / ``apikey create``);
2. starts the web application alone as ``dicomflow serve`` does (gunicorn, here ONE sync worker, so
   every request is served by the same process), on a free loopback port;
3. warms up (a QIDO-RS search and a WADO-RS retrieve of one instance: Django, the URL map and
   pydicom are loaded), then reads the worker's resident memory (the baseline);
4. for each run, a client (httpx, streaming, in this process) retrieves the series with WADO-RS
   (``Accept: multipart/related; type="application/dicom"``), counting bytes and parts and
   discarding them, while a thread samples the worker's RSS (psutil) every 10 ms; then the same for
   the series' ``metadata`` (DICOM JSON, one header per instance) and, as a reference inside the same
   server, the REST API's streamed ZIP download of the series;
5. prints per contender the bytes, seconds, MB/s, peak RSS and peak − baseline, and the target
   (peak − baseline of the WADO-RS retrieve < 64 MiB while the body is hundreds of MB: memory flat)
   as PASS/MISS. ``--json FILE`` writes the figures too ('-' = stdout).

Exit status 0 when every contender was measured (target met or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _peers  # noqa: E402

MiB = 1024 * 1024
TARGET_DELTA = 64 * MiB


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class RssSampler(threading.Thread):
    """Peak resident memory of one process, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            time.sleep(self.interval)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def fetch(client: httpx.Client, url: str, accept: str, worker: int) -> dict:
    """GET ``url`` streaming; bytes, multipart parts, seconds and the worker's peak RSS."""
    sampler = RssSampler(worker)
    sampler.start()
    start = time.perf_counter()
    size = parts = 0
    tail = b""
    with client.stream("GET", url, headers={"Accept": accept}) as response:
        if response.status_code != 200:
            sampler.stop()
            raise _peers.PeerError(f"GET {url} answered {response.status_code}: {response.read()[:300]!r}")
        ctype = response.headers.get("content-type", "")
        boundary = ctype.partition("boundary=")[2].split(";")[0].strip('"').encode()
        delimiter = b"--" + boundary if boundary else b""
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
            if delimiter:
                window = tail + chunk
                parts += window.count(delimiter)
                tail = window[-(len(delimiter) - 1):]
        declared = response.headers.get("content-length")
    seconds = time.perf_counter() - start
    peak = sampler.stop()
    if declared is not None and int(declared) != size:
        raise _peers.PeerError(f"GET {url}: {size} bytes received, Content-Length said {declared}")
    return {"bytes": size, "parts": max(0, parts - 1) if delimiter else None, "seconds": round(seconds, 3),
            "peak_rss": peak, "samples": sampler.samples}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", dest="json_out", help="write the figures as JSON to this file ('-' = stdout)")
    args = parser.parse_args(argv)
    _peers.install_cleanup()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="wado-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    figures: dict = {"slices": args.slices, "size": args.size, "runs": args.runs}
    try:
        ct, home = work / "ct", work / "home"
        if not ct.exists():
            log(f"writing {args.slices} slices of {args.size}² CT …")
            _peers.run_checked([sys.executable, "-m", "dicomflow.testing", "ct", str(ct), "--slices", str(args.slices),
                                "--size", str(args.size), "--seed", "17", "--patient-id", "WADO-BENCH"],
                               what="python -m dicomflow.testing ct")
        if home.exists():
            shutil.rmtree(home)
        home.mkdir()
        env = _peers.dicomflow_env(home)
        cmd = _peers.dicomflow_cmd()
        log("importing …")
        imported = json.loads(_peers.run_checked([*cmd, "import", str(ct), "--json"], env=env, what="dicomflow import").stdout)
        if imported["instances_new"] != args.slices:
            raise _peers.PeerError(f"import catalogued {imported['instances_new']} of {args.slices} slices")
        _peers.run_checked([*cmd, "user", "create", "bench", "--clinical-pool", "--json"], env=env,
                           what="dicomflow user create")
        key = json.loads(_peers.run_checked([*cmd, "apikey", "create", "bench", "--json"], env=env,
                                            what="dicomflow apikey create").stdout)["key"]
        series_bytes = sum(p.stat().st_size for p in ct.rglob("*") if p.is_file())
        figures["series_bytes"] = series_bytes

        port = _peers.free_port()
        gunicorn = Path(sys.executable).with_name("gunicorn")
        server = _peers.spawn([str(gunicorn), "dicomflow.wsgi:application", "--bind", f"127.0.0.1:{port}",
                               "--workers", "1", "--timeout", "600"], env=env, log=work / "gunicorn.log")
        _peers.wait_for_port(port, server, timeout=120, log=work / "gunicorn.log")
        deadline = time.monotonic() + 30
        while not (children := psutil.Process(server.pid).children()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(children) != 1:
            raise _peers.PeerError(f"expected one gunicorn worker, found {len(children)}")
        worker = children[0].pid
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-Api-Key": key}, timeout=600) as client:
            [study] = client.get("/dicomweb/studies", params={"PatientID": "WADO-BENCH"}).raise_for_status().json()
            study_uid = study["0020000D"]["Value"][0]
            [series] = client.get(f"/dicomweb/studies/{study_uid}/series").raise_for_status().json()
            series_uid = series["0020000E"]["Value"][0]
            first = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances",
                               params={"limit": 1}).raise_for_status().json()[0]["00080018"]["Value"][0]
            dicom = 'multipart/related; type="application/dicom"'
            fetch(client, f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{first}", dicom, worker)
            fetch(client, f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{first}/metadata",
                  "application/dicom+json", worker)
            fetch(client, f"/api/series/{series_uid}/", "application/json", worker)
            time.sleep(0.3)
            baseline = rss(worker)
            figures["baseline_rss"] = baseline
            contenders = {
                "wado-rs series": (f"/dicomweb/studies/{study_uid}/series/{series_uid}", dicom),
                "wado-rs series metadata": (f"/dicomweb/studies/{study_uid}/series/{series_uid}/metadata",
                                            "application/dicom+json"),
                "api series zip": (f"/api/series/{series_uid}/download/", "application/zip"),
            }
            results: dict[str, list[dict]] = {name: [] for name in contenders}
            for run in range(args.runs):
                order = list(contenders) if run % 2 == 0 else list(reversed(contenders))
                for name in order:
                    url, accept = contenders[name]
                    try:
                        results[name].append(fetch(client, url, accept, worker))
                    except (_peers.PeerError, httpx.HTTPError) as exc:
                        errors.append(f"{name}: {exc}")
            figures["after_rss"] = rss(worker)
        _peers.stop(server)
        wado = results["wado-rs series"]
        if wado and wado[0]["parts"] != args.slices:
            errors.append(f"wado-rs series: {wado[0]['parts']} parts for {args.slices} slices")
        figures["contenders"] = {}
        print(f"\nWADO-RS streaming: {args.slices} slices of {args.size}², {series_bytes / MiB:.1f} MiB of files; "
              f"gunicorn worker baseline RSS {baseline / MiB:.1f} MiB")
        print(f"{'contender':26} {'MiB':>9} {'s':>7} {'MiB/s':>8} {'peak RSS':>9} {'Δ MiB':>7}  (median of {args.runs})")
        for name, runs in results.items():
            if not runs:
                continue
            peak = max(r["peak_rss"] for r in runs)
            seconds = statistics.median(r["seconds"] for r in runs)
            size = runs[0]["bytes"]
            row = {"bytes": size, "seconds": seconds, "mib_per_s": round(size / MiB / seconds, 1) if seconds else None,
                   "peak_rss": peak, "delta_rss": peak - baseline, "runs": runs}
            figures["contenders"][name] = row
            print(f"{name:26} {size / MiB:9.1f} {seconds:7.2f} {row['mib_per_s'] or 0:8.1f} {peak / MiB:9.1f} "
                  f"{(peak - baseline) / MiB:7.1f}")
        if "wado-rs series" in figures["contenders"]:
            delta = figures["contenders"]["wado-rs series"]["delta_rss"]
            verdict = "PASS" if delta < TARGET_DELTA else "MISS"
            figures["target"] = {"delta_rss_below": TARGET_DELTA, "met": verdict == "PASS"}
            print(f"{verdict}  WADO-RS series retrieve: worker RSS grew {delta / MiB:.1f} MiB while streaming "
                  f"{figures['contenders']['wado-rs series']['bytes'] / MiB:.0f} MiB (target < {TARGET_DELTA // MiB} MiB)")
    except (_peers.PeerError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
        errors.append(str(exc))
    finally:
        _peers.stop_all()
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    figures["errors"] = errors
    if errors:
        print("\nERRORS\n" + "\n".join(f"- {e}" for e in errors))
    if args.json_out:
        text = json.dumps(figures, indent=2)
        if args.json_out == "-":
            print(text)
        else:
            Path(args.json_out).write_text(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
