"""``remote.http``: the remote-processing protocol (health, token with refresh, ZIP upload with a
confirmed SHA-256, task id, polling with back-off and a time limit, result checksum, references,
confirmation, proxy) against a small fake server on a real socket that misbehaves on purpose — and
the attack of issue 14: a template cannot choose where the data goes or which secret goes with it."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomflow.catalog.models import Series
from dicomflow.core.segmentation import ct_body_lungs
from dicomflow.intake.services import import_paths
from dicomflow.processing import services
from dicomflow.processing.models import JobStatus, LogEntry, Result, Template
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT = PatientSpec("HTTP-PAT-31", "Birke^Berta", "F", "19610203")
CREDENTIAL = "cred-6f1e2d"  # the operator's credential (DICOMFLOW_TOKEN_SEG)


class FakeServer:
    """The protocol of ``remote.http`` with switches for misbehaving. Records every request."""

    def __init__(self, folder: Path, *, health_failures: int = 0, gateway_errors: dict | None = None,
                 upload_bad_sha: bool = False, result_bad_sha: bool = False, corrupt_downloads: int = 0,
                 lose_task_after_polls: int | None = None, slow: bool = False, fail: bool = False,
                 token_uses: int | None = None, reject_all_tokens: bool = False, wrong_reference: bool = False,
                 stall_status_seconds: float = 0.0, prefix: str = "/api"):
        self.requests: list[dict] = []
        self.tasks: dict[str, dict] = {}
        self.confirmations: list[dict] = []
        self.tokens: dict[str, int] = {}  # access token -> uses left
        self.token_requests = 0
        self.lock = threading.Lock()
        gateway = dict(gateway_errors or {})
        server = self

        def segment(task_id: str, body: bytes) -> None:
            work = folder / task_id
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                zf.extractall(work / "in")
            written = ct_body_lungs.run(sorted((work / "in").iterdir()), work / "out")
            if wrong_reference:
                for path in written:
                    ds = pydicom.dcmread(path)
                    for frame in ds.ReferencedFrameOfReferenceSequence:
                        for study in frame.RTReferencedStudySequence:
                            for series in study.RTReferencedSeriesSequence:
                                series.SeriesInstanceUID = generate_uid()
                    ds.save_as(path)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as zf:
                for p in written:
                    zf.write(p, arcname=p.name)
            data = buffer.getvalue()
            digest = hashlib.sha256(data + (b"x" if result_bad_sha else b"")).hexdigest()
            task = server.tasks.get(task_id)
            if task is None:  # deleted or lost meanwhile
                return
            task.update(status="failed" if fail else ("running" if slow else "done"), result=data, sha256=digest,
                        message="model crashed" if fail else "")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, data: bytes = b"", content_type: str = "application/json", headers=None):
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _json(self, document, code=200):
                self._send(code, json.dumps(document).encode())

            def _route(self):
                absolute = self.path.startswith("http://")
                path = urlsplit(self.path).path
                if not path.startswith(prefix + "/"):
                    return None, absolute
                return path[len(prefix):], absolute

            def _record(self, path, absolute, body=b""):
                with server.lock:
                    server.requests.append({"method": self.command, "path": path, "absolute": absolute,
                                            "host": self.headers.get("Host", ""), "headers": dict(self.headers),
                                            "at": time.monotonic(), "body_size": len(body)})

            def _gateway(self, kind: str) -> bool:
                with server.lock:
                    if gateway.get(kind, 0) != 0:
                        gateway[kind] -= 1  # a negative count: for ever
                        return True
                return False

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                token = header.removeprefix("Bearer ")
                with server.lock:
                    if reject_all_tokens or token not in server.tokens or server.tokens[token] == 0:
                        return False
                    server.tokens[token] -= 1
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                path, absolute = self._route()
                body = self._body()
                self._record(path, absolute, body)
                if path == "/auth/token":
                    if self.headers.get("Authorization") != f"Bearer {CREDENTIAL}":
                        return self._json({"error": "bad credential"}, 401)
                    with server.lock:
                        server.token_requests += 1
                        token = f"acc-{server.token_requests}"
                        server.tokens[token] = token_uses if token_uses is not None else -1
                    return self._json({"access_token": token, "expires_in": 60})
                if not self._authorised():
                    return self._json({"error": "token expired"}, 401)
                if path == "/tasks":
                    if self._gateway("upload"):
                        return self._json({"error": "bad gateway"}, 502)
                    task_id = f"t{len(server.tasks) + 1}"
                    server.tasks[task_id] = {"status": "queued", "polls": 0, "downloads": 0}
                    digest = hashlib.sha256(body).hexdigest()
                    threading.Thread(target=segment, args=(task_id, body), daemon=True).start()
                    return self._json({"id": task_id, "sha256": "0" * 64 if upload_bad_sha else digest}, 201)
                parts = path.strip("/").split("/")
                if len(parts) == 3 and parts[2] == "confirm" and parts[1] in server.tasks:
                    server.confirmations.append(json.loads(body))
                    server.tasks[parts[1]]["confirmed"] = True
                    return self._send(204)
                return self._json({"error": "not found"}, 404)

            def do_DELETE(self):
                path, absolute = self._route()
                self._record(path, absolute)
                server.tasks.pop(path.strip("/").split("/")[-1], None)
                return self._send(204)

            def do_GET(self):
                path, absolute = self._route()
                self._record(path, absolute)
                if path == "/health":
                    with server.lock:
                        if server_health[0] != 0:
                            server_health[0] -= 1
                            return self._json({"error": "bad gateway"}, 502)
                    return self._json({"status": "ok"})
                if not self._authorised():
                    return self._json({"error": "token expired"}, 401)
                parts = path.strip("/").split("/")
                task = server.tasks.get(parts[1]) if len(parts) > 1 else None
                if task is None:
                    return self._json({"error": "no such task"}, 404)
                if len(parts) == 3 and parts[2] == "result":
                    if self._gateway("result"):
                        return self._json({"error": "bad gateway"}, 502)
                    task["downloads"] += 1
                    data = task["result"]
                    if task["downloads"] <= corrupt_downloads:
                        data = data[:-1] + bytes([data[-1] ^ 0xFF])
                    return self._send(200, data, "application/zip")
                if self._gateway("status"):
                    return self._json({"error": "bad gateway"}, 502)
                if stall_status_seconds:
                    time.sleep(stall_status_seconds)  # an overloaded server: no answer in time
                task["polls"] += 1
                if lose_task_after_polls is not None and task["polls"] > lose_task_after_polls:
                    server.tasks.pop(parts[1], None)  # the server restarted and forgot it
                    return self._json({"error": "no such task"}, 404)
                return self._json({k: v for k, v in task.items() if k in ("status", "message", "sha256")})

        server_health = [health_failures]
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def seen(self, method: str, path: str | None = None) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and (path is None or r["path"] == path)]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def builtins():
    services.ensure_builtin_templates()


@pytest.fixture
def servers(tmp_path):
    made = []

    def make(**kwargs) -> FakeServer:
        made.append(FakeServer(tmp_path / f"server{len(made)}", **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def register(tmp_path, settings, monkeypatch):
    """Write the operator registry with the given HTTP endpoints; the credential in DICOMFLOW_TOKEN_SEG."""
    monkeypatch.setenv("DICOMFLOW_TOKEN_SEG", CREDENTIAL)

    def write(**endpoints) -> None:
        path = tmp_path / "processors.json"
        path.write_text(json.dumps({"http_endpoints": endpoints}))
        settings.DICOMFLOW_PROCESSORS = path

    return write


def _endpoint(server: FakeServer, **extra) -> dict:
    return {"url": server.url + "/api", "token_variable": "DICOMFLOW_TOKEN_SEG", **extra}


FAST = {"poll_seconds": 0.05, "max_poll_seconds": 0.2, "retry_seconds": 0.02, "timeout_seconds": 60}


def _run(tmp_path, name: str, parameters: dict):
    # Stored without the save-time check (bulk_create skips it), as a row written before that check
    # existed or straight into the database would be: the processor itself must refuse it at run time.
    Template.objects.bulk_create([Template(name=name, definition={
        "processor": "remote.http", "parameters": parameters,
        "requires": {"modalities": ["CT"], "min_images": 10},
    })])
    info = write_image_series(tmp_path / f"ct-{name}", patient=PATIENT, n_slices=12, rows=32, cols=32, seed=name)
    import_paths([tmp_path / f"ct-{name}"], workers=1)
    series = Series.objects.get(series_instance_uid=info.series_uid)
    job = services.run_job_inline(services.create_job(project_key="REMOTE", series_id=series.id,
                                                      template_name=name).pk)
    return job, info


def _log(job) -> str:
    return "\n".join(LogEntry.objects.filter(job=job).order_by("pk").values_list("message", flat=True))


# --- the protocol when all goes well -----------------------------------------------------------------
def test_protocol_health_token_upload_poll_download_verify_confirm(tmp_path, servers, register):
    server = servers()
    register(seg=_endpoint(server))
    job, info = _run(tmp_path, "http-ok", {"endpoint": "seg", "options": {"model": "body"}, **FAST})
    assert job.status == JobStatus.FINISHED, job.error
    order = [(r["method"], r["path"]) for r in server.requests if r["path"] != "/tasks/t1"]
    assert order[:3] == [("GET", "/health"), ("POST", "/auth/token"), ("POST", "/tasks")]
    assert order[-2:] == [("GET", "/tasks/t1/result"), ("POST", "/tasks/t1/confirm")]
    [upload] = server.seen("POST", "/tasks")
    # the access token travels, the credential only to the token route; the digest of the body is announced
    assert upload["headers"]["Authorization"] == "Bearer acc-1"
    assert all(CREDENTIAL not in json.dumps(r["headers"]) for r in server.requests if r["path"] != "/auth/token")
    assert len(upload["headers"]["X-Content-SHA256"]) == 64
    assert json.loads(upload["headers"]["X-Dicomflow-Options"]) == {"model": "body"}
    assert server.confirmations == [{"accepted": True}]
    [result] = Result.objects.filter(job=job)
    assert result.verified and result.reidentified
    ds = pydicom.dcmread(result.path)
    assert ds.PatientID == PATIENT.patient_id and ds.StudyInstanceUID == info.study_uid
    log = _log(job)
    assert "SHA-256 confirmed" in log and "checksum verified" in log and "may delete its copy" in log
    assert CREDENTIAL not in log and "acc-1" not in log


def test_through_the_operators_proxy_only(tmp_path, servers, register):
    """The endpoint's host cannot be reached directly: only through the proxy the operator set."""
    server = servers()
    register(seg={"url": "http://seg.invalid:9/api", "token_variable": "DICOMFLOW_TOKEN_SEG", "proxy": server.url})
    job, _ = _run(tmp_path, "http-proxy", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FINISHED, job.error
    assert server.requests and all(r["absolute"] and r["host"] == "seg.invalid:9" for r in server.requests)


# --- misbehaviour ------------------------------------------------------------------------------------
def test_502s_are_retried_with_back_off_and_the_job_still_finishes(tmp_path, servers, register):
    server = servers(health_failures=2, gateway_errors={"upload": 1, "status": 2, "result": 1})
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-502", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FINISHED, job.error
    assert len(server.seen("GET", "/health")) == 3 and len(server.seen("POST", "/tasks")) == 2
    assert len(server.seen("GET", "/tasks/t1/result")) == 2
    assert len(server.tasks) == 1  # the retried upload after a 502 made no second task
    assert "HTTP 502 to the status request; trying again" in _log(job)


def test_502s_for_ever_end_the_job_with_a_clear_error(tmp_path, servers, register):
    server = servers(gateway_errors={"status": -1})
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-502s", {"endpoint": "seg", **FAST, "retries": 2})
    assert job.status == JobStatus.FAILED
    assert "the status request failed 3 time(s) (last: HTTP 502)" in job.error
    assert len(server.seen("GET", "/tasks/t1")) == 3


def test_an_unhealthy_server_gets_nothing(tmp_path, servers, register):
    server = servers(health_failures=-1)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-sick", {"endpoint": "seg", **FAST, "health_retries": 3})
    assert job.status == JobStatus.FAILED
    assert "is not healthy after 3 check(s) (last: HTTP 502); nothing was sent" in job.error
    assert len(server.seen("GET", "/health")) == 3 and not server.seen("POST")


def test_an_unconfirmed_upload_checksum_ends_the_job_and_deletes_the_task(tmp_path, servers, register):
    server = servers(upload_bad_sha=True)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-upsha", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "upload not confirmed" in job.error
    assert server.seen("DELETE", "/tasks/t1") and not server.seen("GET", "/tasks/t1")


def test_a_result_checksum_mismatch_is_downloaded_again_then_refused(tmp_path, servers, register):
    server = servers(result_bad_sha=True)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-badsha", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "does not match its checksum (SHA-256)" in job.error
    assert len(server.seen("GET", "/tasks/t1/result")) == 2
    assert not Result.objects.filter(job=job).exists()
    assert {"accepted": True} not in server.confirmations


def test_a_damaged_download_heals_on_the_second_try(tmp_path, servers, register):
    server = servers(corrupt_downloads=1)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-heal", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FINISHED, job.error
    assert len(server.seen("GET", "/tasks/t1/result")) == 2
    assert "does not match its SHA-256 (download 1 of 2)" in _log(job)


def test_a_task_the_server_lost_ends_the_job_instead_of_polling_for_ever(tmp_path, servers, register):
    server = servers(slow=True, lose_task_after_polls=2)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-lost", {"endpoint": "seg", **FAST, "timeout_seconds": 3600})
    assert job.status == JobStatus.FAILED
    assert "the server no longer knows task t1 (HTTP 404" in job.error
    assert len(server.seen("GET", "/tasks/t1")) == 3  # two answers, then the 404 ends it


def test_a_slow_server_is_polled_with_back_off_until_the_time_limit(tmp_path, servers, register):
    server = servers(slow=True)
    register(seg=_endpoint(server))
    started = time.monotonic()
    job, _ = _run(tmp_path, "http-slow", {"endpoint": "seg", **FAST, "max_poll_seconds": 0.4,
                                          "timeout_seconds": 1.5})
    assert time.monotonic() - started < 30
    assert job.status == JobStatus.FAILED and "not done within the time limit (1.5 s)" in job.error
    polls = [r["at"] for r in server.seen("GET", "/tasks/t1")]
    gaps = [b - a for a, b in zip(polls, polls[1:])]
    assert 4 <= len(polls) <= 14, len(polls)  # 30 at a fixed 0.05 s
    assert max(gaps) >= 0.3  # backed off towards max_poll_seconds (a fixed 0.05 s poll never waits that long)
    assert server.seen("DELETE", "/tasks/t1")


def test_a_server_that_does_not_answer_in_time_is_retried_then_given_up(tmp_path, servers, register):
    server = servers(slow=True, stall_status_seconds=1.0)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-stall", {"endpoint": "seg", **FAST, "request_timeout": 0.3, "retries": 1})
    assert job.status == JobStatus.FAILED
    assert "the status request failed 2 time(s) (last: ReadTimeout)" in job.error
    assert len(server.seen("GET", "/tasks/t1")) == 2


def test_a_failed_task_ends_the_job_with_the_servers_reason(tmp_path, servers, register):
    server = servers(fail=True)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-fail", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "the server failed the task: model crashed" in job.error


def test_a_result_referencing_another_series_is_refused_and_not_confirmed(tmp_path, servers, register):
    server = servers(wrong_reference=True)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-wrongref", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED
    assert "does not reference the series sent" in job.error and "other series" in job.error
    assert [c["accepted"] for c in server.confirmations] == [False]
    assert not Result.objects.filter(job=job).exists()


def test_an_expired_token_is_refreshed_on_401(tmp_path, servers, register):
    server = servers(token_uses=2)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-refresh", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FINISHED, job.error
    assert server.token_requests >= 2
    assert "HTTP 401 to the" in _log(job) and "refreshing the token" in _log(job)


def test_a_token_refused_after_refresh_ends_the_job(tmp_path, servers, register):
    server = servers(reject_all_tokens=True)
    register(seg=_endpoint(server))
    job, _ = _run(tmp_path, "http-401", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "refused our token (HTTP 401 to the upload) even after a token refresh" in job.error
    assert server.token_requests == 2


# --- the attack of issue 14: where the data goes and which secret goes with it ------------------------
def _nothing_sent(*servers_) -> None:
    for server in servers_:
        assert server.requests == [], server.requests


def test_a_template_with_its_own_url_and_secret_variable_is_refused(tmp_path, servers, register, settings):
    attacker = servers()
    register(seg=_endpoint(servers()))
    job, _ = _run(tmp_path, "http-steal", {"url": attacker.url + "/api", "token_env": "DICOMFLOW_SECRET_KEY", **FAST})
    assert job.status == JobStatus.FAILED
    assert "may not carry 'url', 'token_env'" in job.error and "registered by the operator" in job.error
    _nothing_sent(attacker)
    assert settings.SECRET_KEY not in job.error + _log(job)


def test_a_registered_endpoint_cannot_be_redirected_by_the_template(tmp_path, servers, register):
    good, attacker = servers(), servers()
    register(seg=_endpoint(good))
    job, _ = _run(tmp_path, "http-redirect", {"endpoint": "seg", "url": attacker.url + "/api", **FAST})
    assert job.status == JobStatus.FAILED and "may not carry 'url'" in job.error
    _nothing_sent(good, attacker)


def test_an_unregistered_endpoint_is_refused(tmp_path, servers, register):
    good = servers()
    register(seg=_endpoint(good))
    job, _ = _run(tmp_path, "http-unknown", {"endpoint": "elsewhere", **FAST})
    assert job.status == JobStatus.FAILED
    assert "HTTP endpoint 'elsewhere' is not one the operator allows (allowed: seg" in job.error
    _nothing_sent(good)


@pytest.mark.parametrize("variable", ["DICOMFLOW_SECRET_KEY", "HOME", "PATH"])
def test_no_variable_outside_the_token_prefix_can_become_a_token(tmp_path, servers, register, monkeypatch,
                                                                 variable):
    """Even in the operator's file: the registry refuses it and the job sends nothing."""
    monkeypatch.setenv(variable, "value-that-must-stay-here")
    server = servers()
    register(seg={"url": server.url + "/api", "token_variable": variable})
    job, _ = _run(tmp_path, f"http-var-{variable.lower()}", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "must be an environment variable name starting with DICOMFLOW_TOKEN_" in job.error
    _nothing_sent(server)


def test_an_unset_token_variable_is_a_clear_error_and_nothing_is_sent(tmp_path, servers, register, monkeypatch):
    server = servers()
    register(seg={"url": server.url + "/api", "token_variable": "DICOMFLOW_TOKEN_MISSING"})
    monkeypatch.delenv("DICOMFLOW_TOKEN_MISSING", raising=False)
    job, _ = _run(tmp_path, "http-unset", {"endpoint": "seg", **FAST})
    assert job.status == JobStatus.FAILED and "DICOMFLOW_TOKEN_MISSING (its token) is not set" in job.error
    _nothing_sent(server)
