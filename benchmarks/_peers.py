"""Plumbing for the benchmarks: start/stop the peers, time runs, sample memory.

Every process started here is registered in :data:`PROCESSES` (own session, so its whole group can
be signalled) and stopped by :func:`stop_all` — which ``import_bench`` calls on normal exit, on
errors, on SIGINT/SIGTERM and at interpreter exit — so no Orthanc, storescp or receiver outlives
the benchmark.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

PROCESSES: list[subprocess.Popen] = []


class PeerError(RuntimeError):
    """A contender could not be measured (did not start, failed, lost files)."""


class Unavailable(PeerError):
    """A contender is not installed / not implemented here: reported as skipped, not as an error."""


# --- processes -------------------------------------------------------------------------------------
def spawn(cmd: list[str], *, env: dict | None = None, log: Path | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start a long-running peer in its own session, output to ``log``; registered for clean-up."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()
    PROCESSES.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the peer's process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
    if proc in PROCESSES:
        PROCESSES.remove(proc)


def stop_all() -> None:
    for proc in list(PROCESSES):
        stop(proc, grace=5.0)


def install_cleanup() -> None:
    """Stop every peer on SIGINT/SIGTERM too (atexit alone does not run on a signal)."""
    import atexit

    atexit.register(stop_all)

    def on_signal(signum, _frame):
        stop_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0, log: Path | None = None) -> None:
    """Wait until something accepts TCP connections on the loopback port (and ``proc`` is alive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"{proc.args[0]} exited with status {proc.returncode} while starting" + _tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise PeerError(f"{proc.args[0]} did not open port {port} within {timeout:.0f} s" + _tail(log))


def wait_for_echo(port: int, called_aet: str, proc: subprocess.Popen, timeout: float = 60.0,
                  log: Path | None = None) -> None:
    """Wait until a DICOM receiver answers C-ECHO (DCMTK ``echoscu``).

    A bare TCP probe is not used for DICOM peers: a connection that never sends A-ASSOCIATE-RQ can
    linger as an "association" in the receiver and delay its shutdown.
    """
    binary = tool("echoscu")
    if not binary:
        wait_for_port(port, proc, timeout, log)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"{proc.args[0]} exited with status {proc.returncode} while starting" + _tail(log))
        res = subprocess.run([binary, "-to", "5", "-aet", "BENCHSCU", "-aec", called_aet, "127.0.0.1", str(port)],
                             capture_output=True, timeout=30)
        if res.returncode == 0:
            return
        time.sleep(0.1)
    raise PeerError(f"{proc.args[0]} did not answer C-ECHO on port {port} within {timeout:.0f} s" + _tail(log))


def _tail(log: Path | None, chars: int = 800) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- log tail ---\n" + log.read_text(errors="replace")[-chars:]


def sync() -> None:
    os.sync()


def run_checked(cmd: list[str], *, env: dict | None = None, timeout: float = 3600, what: str = "") -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise PeerError(f"{what or cmd[0]} failed with status {res.returncode}: {last_lines(res.stderr)}")
    return res


def last_lines(output: bytes | str, n: int = 3) -> str:
    """The last ``n`` non-blank lines of a program's output, on one line (the error is usually there)."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def warm(paths: list[Path]) -> int:
    """Read every file once so that all contenders start from a warm page cache."""
    total = 0
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return total


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def tool(name: str, *extra_dirs: str) -> str | None:
    """Path of an external program (also looking in sbin folders, where Debian puts Orthanc)."""
    found = shutil.which(name)
    if found:
        return found
    for d in (*extra_dirs, "/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --- CPU accounting --------------------------------------------------------------------------------
def _tree_cpu(pid: int) -> float:
    """CPU seconds of a running process, its live descendants and its reaped children."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in members:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_snapshot(pids: tuple[int, ...] = ()) -> float:
    """CPU seconds so far of this process, its waited-for children and the given peer trees.

    A timed run's CPU is ``cpu_snapshot(after) - cpu_snapshot(before)``: unlike wall time it hardly
    depends on what else the machine is doing, which matters on a shared 2-core box.
    """
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return total + sum(_tree_cpu(pid) for pid in pids)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# --- dicomflow --------------------------------------------------------------------------------------
def dicomflow_cmd() -> list[str]:
    """The ``dicomflow`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "dicomflow"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dicomflow.cli"]


def dicomflow_env(home: Path, fsync: str = "batch", nodelay: bool | None = None) -> dict:
    """Environment for one dicomflow process: its own SQLite catalog + store in ``home``."""
    env = dict(os.environ)
    for var in ("DATABASE_URL", "CELERY_BROKER_URL", "DICOMFLOW_IMPORT_WORKERS", "DICOMFLOW_IMPORT_BATCH"):
        env.pop(var, None)  # a fresh embedded catalog per run, default tuning
    env["DICOMFLOW_HOME"] = str(home)
    env["DICOMFLOW_FSYNC"] = fsync
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


_TEMPLATE_HOMES: dict[Path, Path] = {}


def prepare_home(home: Path, template_root: Path) -> None:
    """A fresh, empty, migrated ``DICOMFLOW_HOME`` at ``home`` (untimed).

    The first call migrates a template home under ``template_root`` (``dicomflow stats`` migrates
    on first use); later calls copy it, which is much cheaper than starting Django to migrate again.
    """
    template = _TEMPLATE_HOMES.get(template_root)
    if template is None:
        template = template_root / "template-home"
        if template.exists():
            shutil.rmtree(template)
        template.mkdir(parents=True)
        out = run_checked([*dicomflow_cmd(), "stats", "--json"], env=dicomflow_env(template), timeout=300,
                          what="dicomflow stats (migrate)")
        counts = json.loads(out.stdout)
        if counts.get("instances") != 0:
            raise PeerError(f"fresh catalog in {template} is not empty: {counts}")
        _TEMPLATE_HOMES[template_root] = template
    if home.exists():
        shutil.rmtree(home)
    shutil.copytree(template, home, symlinks=True)


def catalog_instances(home: Path) -> int:
    """Instances in the embedded SQLite catalog, read directly (cheap enough to poll every 50 ms)."""
    db = home / "dicomflow.sqlite3"
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM catalog_instance").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def dicomflow_stats(home: Path) -> dict:
    out = run_checked([*dicomflow_cmd(), "stats", "--json"], env=dicomflow_env(home), timeout=300,
                      what="dicomflow stats")
    return json.loads(out.stdout)


@functools.cache
def dicomflow_has_command(name: str) -> bool:
    res = subprocess.run([*dicomflow_cmd(), name, "--help"], capture_output=True, timeout=120)
    return res.returncode == 0


# --- Orthanc ------------------------------------------------------------------------------------------
class Orthanc:
    """Debian's Orthanc on a free loopback port with its own temporary storage and index.

    ``dicom_aet``: also run its DICOM server (C-FIND/C-GET/C-MOVE SCP) under this AE title on a
    free port (``dicom_port``); ``modalities``: its DicomModalities (``{name: [AET, host, port]}``),
    the C-MOVE destinations it knows. Without ``dicom_aet`` the DICOM server stays off (benchmarks).
    """

    def __init__(self, root: Path, *, dicom_aet: str | None = None, modalities: dict | None = None):
        self.binary = tool("Orthanc")
        if not self.binary:
            raise Unavailable("Orthanc is not installed (Debian package 'orthanc')")
        self.root = root
        self.port = free_port()
        self.dicom_aet = dicom_aet
        self.dicom_port = free_port() if dicom_aet else None
        self.modalities = modalities or {}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Orthanc":
        storage, index = self.root / "storage", self.root / "index"
        storage.mkdir(parents=True)
        index.mkdir(parents=True)
        config = {
            "Name": "dicomflow-bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(index),
            "HttpPort": self.port,
            "HttpServerEnabled": True,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageCompression": False,
            "Plugins": [],
        }
        if self.dicom_aet:
            config.update({
                "DicomServerEnabled": True,
                "DicomAet": self.dicom_aet,
                "DicomPort": self.dicom_port,
                "DicomModalities": self.modalities,
                "DicomCheckCalledAet": True,
                "DicomAlwaysAllowEcho": True,
                "DicomAlwaysAllowFind": False,
                "DicomAlwaysAllowMove": False,
                "DicomAlwaysAllowGet": False,
            })
        conf = self.root / "orthanc.json"
        conf.write_text(json.dumps(config, indent=2))
        self.log = self.root / "orthanc.log"
        self.proc = spawn([self.binary, str(conf)], log=self.log)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url, timeout=2) as client:
            while True:
                if self.proc.poll() is not None:
                    raise PeerError(f"Orthanc exited with status {self.proc.returncode}" + _tail(self.log))
                try:
                    if client.get("/system").status_code == 200 and self._dicom_ready():
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise PeerError("Orthanc did not answer /system within 60 s" + _tail(self.log))
                time.sleep(0.05)

    def _dicom_ready(self) -> bool:
        if not self.dicom_port:
            return True
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop(self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upload(self, files: list[Path], clients: int = 2) -> None:
        """POST every file to /instances from ``clients`` concurrent HTTP clients."""
        todo: queue.Queue[Path] = queue.Queue()
        for f in files:
            todo.put(f)
        errors: list[str] = []

        def worker() -> None:
            with httpx.Client(base_url=self.url, timeout=120) as client:
                while not errors:
                    try:
                        path = todo.get_nowait()
                    except queue.Empty:
                        return
                    r = client.post("/instances", content=path.read_bytes(),
                                    headers={"Content-Type": "application/dicom"})
                    if r.status_code != 200:
                        errors.append(f"{path.name}: HTTP {r.status_code}")

        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise PeerError("Orthanc upload failed: " + "; ".join(errors[:3]))

    def instance_count(self) -> int:
        return httpx.get(self.url + "/statistics", timeout=30).json()["CountInstances"]


# --- C-STORE ---------------------------------------------------------------------------------------
def dcmtk_env(nodelay: bool) -> dict:
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


def storescu(port: int, called_aet: str, folder: Path, nodelay: bool, timeout: float = 3600) -> None:
    binary = tool("storescu")
    if not binary:
        raise Unavailable("DCMTK storescu is not installed")
    run_checked([binary, "-aet", "BENCHSCU", "-aec", called_aet, "127.0.0.1", str(port), "+sd", str(folder)],
                env=dcmtk_env(nodelay), timeout=timeout, what="storescu")


# --- memory --------------------------------------------------------------------------------------------
@dataclass
class MemoryTrace:
    """Samples of the resident memory of a process tree (bytes)."""

    times: list[float] = field(default_factory=list)
    tree_rss: list[int] = field(default_factory=list)
    tree_pss: list[int] = field(default_factory=list)  # shared pages counted once (forked workers)
    processes: list[int] = field(default_factory=list)  # size of the tree at each sample
    max_process_rss: int = 0
    max_processes: int = 0

    @property
    def peak_tree_rss(self) -> int:
        return max(self.tree_rss, default=0)

    @property
    def peak_tree_pss(self) -> int:
        return max(self.tree_pss, default=0)

    def steady_start(self) -> int:
        """Index of the first sample with the full process tree (start-up and pool fork done)."""
        return next((i for i, n in enumerate(self.processes) if n == self.max_processes), 0)

    def quarter_peaks(self) -> list[int]:
        """Peak tree RSS in each quarter of the steady part of the run (from :meth:`steady_start`).

        Flat memory means the later quarters do not grow beyond the first.
        """
        start = self.steady_start()
        times, rss = self.times[start:], self.tree_rss[start:]
        if not times:
            return [0, 0, 0, 0]
        t0, span = times[0], max(times[-1] - times[0], 1e-9)
        peaks = [0, 0, 0, 0]
        for t, value in zip(times, rss):
            q = min(3, int(4 * (t - t0) / span))
            peaks[q] = max(peaks[q], value)
        return peaks

    def steady_seconds(self) -> float:
        start = self.steady_start()
        return self.times[-1] - self.times[start] if self.times else 0.0


def run_sampling_memory(cmd: list[str], env: dict, interval: float = 0.05, timeout: float = 3600
                        ) -> tuple[subprocess.CompletedProcess, float, MemoryTrace]:
    """Run ``cmd`` to completion, sampling the RSS of it and all its descendants every ``interval`` s."""
    trace = MemoryTrace()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    PROCESSES.append(proc)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = pss_total = 0
            for p in members:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                total += info.rss
                pss_total += getattr(info, "pss", info.rss)
                trace.max_process_rss = max(trace.max_process_rss, info.rss)
            trace.max_processes = max(trace.max_processes, len(members))
            trace.processes.append(len(members))
            trace.times.append(time.perf_counter())
            trace.tree_rss.append(total)
            trace.tree_pss.append(pss_total)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        PROCESSES.remove(proc)
    elapsed = time.perf_counter() - start
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), elapsed, trace
