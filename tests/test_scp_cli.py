"""``dicomflow scp`` as a real foreground process: start, receive from storescu, SIGTERM, counts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_tool

from dicomflow.testing import synth


pytestmark = pytest.mark.dcmtk


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scp_command_receives_and_stops_cleanly(tmp_path):
    storescu = require_tool("storescu")
    echoscu = require_tool("echoscu")
    home = tmp_path / "home"
    env = {**os.environ, "DICOMFLOW_HOME": str(home), "DICOMFLOW_FSYNC": "never", "TCP_NODELAY": "1"}
    env.pop("DATABASE_URL", None)  # the command's own catalog in its home, whatever the suite runs on
    series = synth.write_image_series(tmp_path / "ct", n_slices=6, rows=32, cols=32)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "scp", "--port", str(port), "--aet", "CLISCP",
         "--allow", "MODALITY@127.0.0.1", "--allow", "ECHOER@*", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([echoscu, "-aet", "ECHOER", "-aec", "CLISCP", "127.0.0.1", str(port)],
                             capture_output=True).returncode != 0:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.2)
        refused = subprocess.run([storescu, "-aet", "OTHER", "-aec", "CLISCP", "127.0.0.1", str(port),
                                  *map(str, series.paths)], env=env, capture_output=True, text=True)
        assert refused.returncode != 0
        sent = subprocess.run([storescu, "-aet", "MODALITY", "-aec", "CLISCP", "127.0.0.1", str(port),
                               "+sd", str(tmp_path / "ct")], env=env, capture_output=True, text=True)
        assert sent.returncode == 0, sent.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr
    summary = json.loads(stdout)
    n = len(series.paths)
    assert summary["port"] == port and summary["aet"] == "CLISCP"
    assert (summary["associations"], summary["files"], summary["new"], summary["duplicate"]) == (1, n, n, 0)
    stats = subprocess.run([sys.executable, "-m", "dicomflow.cli", "stats", "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(stats.stdout) == {"patients": 1, "studies": 1, "series": 1, "instances": len(series.paths)}
    assert not any((home / "work").glob("scp-incoming-*")), "temporary folder left behind"
    stored = [p for p in (home / "store").rglob("*") if p.is_file()]
    assert len(stored) == len(series.paths) and all(p.suffix == ".dcm" for p in stored)
    assert not any(Path(p).name.startswith(".tmp") for p in stored)
