"""`dicomflow serve` as a real process (issue 14, items 5-7): files private to the account (umask
077), an access log without query strings, a web server that 50 slow clients cannot stall, and a
supervisor that restarts a worker that died or stopped answering."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from dicomflow.testing.synth import PatientSpec, write_image_series

READ_TIMEOUT = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DICOMFLOW_", "DATABASE_URL", "CELERY_"))}
    env.update(DICOMFLOW_HOME=str(home), DICOMFLOW_FSYNC="never", DICOMFLOW_WEB_READ_TIMEOUT=str(READ_TIMEOUT),
               DICOMFLOW_WORKER_HEARTBEAT_TIMEOUT="6", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _dicomflow(*args) -> list[str]:
    return [sys.executable, "-c", "from dicomflow.cli import main; main()", *args]


def _wait(predicate, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.2)
    detail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _workers(serve: subprocess.Popen) -> list[psutil.Process]:
    """The Celery worker processes `serve` started (its direct children running celery)."""
    found = []
    for child in psutil.Process(serve.pid).children():
        try:
            if "celery" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `dicomflow serve` for the module (its start, with the schema made, takes a while)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    home = tmp_path / "home"
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(_dicomflow("serve", "--no-scp", "--port", str(port), "--worker-concurrency", "1"),
                                   env=_env(home), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/login/"), 120, "the web server", process, log)
        yield home, port, process, log
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for child in psutil.Process().children(recursive=True):  # nothing of ours left behind
            try:
                if str(home) in " ".join(child.environ().get("DICOMFLOW_HOME", "")):
                    child.kill()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass


def _open_to_others(root: Path) -> list[str]:
    return [f"{p.relative_to(root)} {stat.filemode(p.stat().st_mode)}" for p in [root, *root.rglob("*")]
            if p.exists() and not p.is_symlink() and p.stat().st_mode & 0o077]


@pytest.mark.slow
def test_served_files_are_private_and_the_access_log_has_no_query_strings(served, tmp_path):
    home, port, _process, log = served
    series = write_image_series(tmp_path / "in", patient=PatientSpec("MODE-1", "Mode^Test"), n_slices=3, rows=16,
                                cols=16, seed="modes")
    imported = subprocess.run(_dicomflow("import", str(series.paths[0].parent)), env=_env(home),
                              capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    r = httpx.get(f"http://127.0.0.1:{port}/api/patients/?patient_id=SECRET-PID-4711&q=Doe%5EJane", timeout=5)
    assert r.status_code in (401, 403, 404)
    _wait(lambda: "SECRET" in "" or (home / "logs" / "web-access.log").stat().st_size > 0, 10, "the access log")
    time.sleep(0.5)
    access = (home / "logs" / "web-access.log").read_text()
    assert "/api/patients/" in access and '"GET /login/ HTTP/1.1" 200' in access
    assert "SECRET-PID-4711" not in access and "Doe" not in access and "?" not in access
    # everything the product wrote: the catalog database and its WAL, logs, store, keys, run files
    for name in ("dicomflow.sqlite3", "dicomflow.sqlite3-wal", "logs/dicomflow.log", "logs/web-access.log",
                 "keys/django_secret_key", "run/serve.pid"):
        assert (home / name).exists(), name
    assert any((home / "store").rglob("*.dcm")) or any(p.is_file() for p in (home / "store").rglob("*"))
    assert _open_to_others(home) == []


@pytest.mark.slow
def test_fifty_slow_clients_do_not_stall_the_web_server_and_are_closed_after_the_read_timeout(served):
    _home, port, _process, _log = served
    slow = []
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing
        slow.append(s)
    try:
        time.sleep(0.5)
        for _ in range(3):
            started = time.monotonic()
            r = httpx.get(f"http://127.0.0.1:{port}/login/", timeout=5)
            assert r.status_code == 200 and time.monotonic() - started < 2.0
        time.sleep(READ_TIMEOUT + 3)
        closed = 0
        for s in slow:
            s.settimeout(2)
            try:
                closed += s.recv(1024) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except TimeoutError:
                pass
        assert closed == 50
    finally:
        for s in slow:
            s.close()


@pytest.mark.slow
def test_serve_restarts_a_worker_that_was_killed_or_stopped_answering(served):
    home, port, process, log = served
    first = _wait(lambda: _workers(process), 60, "the worker", process, log)[0]
    heartbeats = lambda: list((home / "run").glob("*.heartbeat"))  # noqa: E731
    _wait(heartbeats, 60, "the worker's heartbeat file", process, log)
    # a second serve on the same home refuses: control files are one set per home
    again = subprocess.run(_dicomflow("serve", "--no-scp", "--port", str(free_port())), env=_env(home),
                           capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "already running" in again.stderr
    os.killpg(first.pid, signal.SIGKILL)  # the worker and anything of its own
    second = _wait(lambda: [w for w in _workers(process) if w.pid != first.pid], 30, "a new worker", process, log)[0]
    _wait(lambda: heartbeats() and all(h.stat().st_mtime > time.time() - 5 for h in heartbeats()), 60,
          "the new worker's heartbeat", process, log)
    second.suspend()  # alive but silent (SIGSTOP): its heartbeat goes stale
    try:
        third = _wait(lambda: [w for w in _workers(process) if w.pid not in (first.pid, second.pid)], 60,
                      "the silent worker to be replaced", process, log)[0]
    finally:
        if second.is_running():
            second.kill()
    assert third.is_running() and process.poll() is None
    text = log.read_text()
    assert "exited with status" in text and "sent no heartbeat" in text
    assert _answers(f"http://127.0.0.1:{port}/login/")
    # and the replaced worker takes tasks (the former prefork pool on the filesystem broker wedged
    # for good once its pool processes were killed: they held the shared job queue's lock)
    probe = subprocess.run([sys.executable, "-c", (
        "import django; django.setup()\n"
        "from dicomflow.intake.tasks import recover_abandoned_jobs\n"
        "print('result', recover_abandoned_jobs.delay().get(timeout=60))\n")],
        env=_env(home) | {"DJANGO_SETTINGS_MODULE": "dicomflow.settings"}, capture_output=True, text=True, timeout=120)
    assert "result {}" in probe.stdout, probe.stderr[-2000:]
