"""The SDK's robustness over real HTTP (pytest-django ``live_server``): retries with back-off on
503 for idempotent calls only, requests that never left are repeated, timeouts, waits that end in
the job's outcome, the upload's problems and studies, and all-or-nothing safe ZIP extraction.

Failures are injected by httpx transports that answer 503 or fail the connection for the first N
matching requests and pass everything else to the real server.
"""

from __future__ import annotations

import io
import socket
import stat
import threading
import time
import zipfile

import httpx
import pytest

from dicomflow.accounts.models import ApiKey
from dicomflow.accounts.services import create_api_key
from dicomflow.catalog.models import Series as SeriesRow
from dicomflow.processing.models import Job as JobRow
from dicomflow.processing.services import create_job
from dicomflow.sdk import (
    ApiError,
    Client,
    JobCancelled,
    JobFailed,
    SdkError,
    UnsafeArchive,
    UnsupportedByServer,
    WaitTimeout,
)
from dicomflow.testing.synth import PatientSpec, write_image_series

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key(admin_user) -> str:
    return create_api_key(admin_user, admin_user, name="test")[1]


class FailFirst(httpx.HTTPTransport):
    """The first ``n`` requests matching ``method`` and ``path_part`` fail (``status`` answered
    without reaching the server, or ``error`` raised); every request is counted."""

    def __init__(self, method: str, path_part: str, n: int, *, status: int = 503, error: type | None = None,
                 send_first: bool = False, headers: dict | None = None):
        super().__init__()
        self.method, self.path_part, self.n, self.status, self.error = method, path_part, n, status, error
        self.send_first, self.headers, self.seen = send_first, headers or {}, 0

    def handle_request(self, request):
        if request.method != self.method or self.path_part not in request.url.path:
            return super().handle_request(request)
        self.seen += 1
        if self.seen > self.n:
            return super().handle_request(request)
        if self.send_first:  # the server does the work; the answer is lost on the way back
            super().handle_request(request).close()
        if self.error is not None:
            raise self.error("injected failure", request=request)
        return httpx.Response(self.status, json={"detail": "try later", "code": "unavailable", "status": self.status},
                              headers=self.headers, request=request)


def test_idempotent_calls_are_retried_on_503_within_the_bound(live_server, key):
    transport = FailFirst("GET", "/api/patients/", 3)
    with Client(live_server.url, api_key=key, transport=transport, retries=3, retry_wait=0.01) as client:
        assert client.patients() == []
    assert transport.seen == 4
    transport = FailFirst("GET", "/api/patients/", 3, status=504)
    with Client(live_server.url, api_key=key, transport=transport, retries=2, retry_wait=0.01) as client:
        with pytest.raises(ApiError) as err:
            client.patients()
    assert (err.value.status, err.value.detail, err.value.code, transport.seen) == (504, "try later", "unavailable", 3)


def test_retry_after_is_honoured_and_back_off_is_bounded_and_jittered(live_server, key):
    transport = FailFirst("GET", "/api/patients/", 1, headers={"Retry-After": "0.3"})
    with Client(live_server.url, api_key=key, transport=transport, retry_wait=5.0) as client:
        started = time.monotonic()
        client.patients()
        assert 0.3 <= time.monotonic() - started < 3  # the server's 0.3 s, not 5 s of back-off
        waits = [client._backoff(attempt) for attempt in range(12) for _ in range(5)]
    assert all(0 < w <= 30.0 for w in waits) and max(waits) > 15  # doubles up to the cap
    assert len({round(w, 6) for w in waits}) > 50  # jittered: no two clients retry in step
    assert all(2.5 <= client._backoff(0) <= 5.0 for _ in range(20))  # first wait: retry_wait, halved at most


def test_a_post_that_reached_the_server_is_not_repeated(live_server, key, admin_user):
    transport = FailFirst("POST", "/api/auth/token/", 1, status=503)
    with pytest.raises(ApiError) as err:
        Client.login(live_server.url, "admin", "password", transport=transport, retry_wait=0.01)
    assert err.value.status == 503 and transport.seen == 1
    before = ApiKey.objects.count()
    transport = FailFirst("POST", "/api/auth/token/", 1, error=httpx.ReadError, send_first=True)
    with pytest.raises(httpx.ReadError):
        Client.login(live_server.url, "admin", "password", transport=transport, retry_wait=0.01)
    assert transport.seen == 1 and ApiKey.objects.count() == before + 1  # done once, not twice


def test_a_post_that_never_left_is_sent_again(live_server, key):
    transport = FailFirst("POST", "/api/auth/token/", 2, error=httpx.ConnectError)
    client = Client.login(live_server.url, "admin", "password", transport=transport, retry_wait=0.01)
    with client:
        assert transport.seen == 3 and client.patients() == []


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung proxy)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_every_call_has_a_timeout(silent_server):
    with Client(silent_server, api_key="k", timeout=0.3, retries=1, retry_wait=0.01) as client:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.patients()
        assert time.monotonic() - started < 3  # two attempts of 0.3 s, not a hang
    assert Client("http://x", timeout=60)._http.timeout.connect == 10.0


def test_waits_end_in_the_jobs_outcome(live_server, key, tmp_path):
    from dicomflow.intake.services import import_paths

    info = write_image_series(tmp_path / "ct", PatientSpec("SDKW-1", "Wait^Walter"), n_slices=2, rows=16, cols=16,
                              seed="sdk-wait")
    import_paths([tmp_path / "ct"], workers=1, analyse=False)
    series = SeriesRow.objects.get(series_instance_uid=info.series_uid)
    jobs = [create_job(project_key="SDKW", series_id=series.pk) for _ in range(4)]
    JobRow.objects.filter(pk=jobs[0].pk).update(status="finished")
    JobRow.objects.filter(pk=jobs[1].pk).update(status="failed", error="the processor exited with status 1")
    JobRow.objects.filter(pk=jobs[2].pk).update(status="cancelled")
    seen = []
    with Client(live_server.url, api_key=key) as client:
        assert client.wait_for_results(jobs[0].pk, timeout=5, progress=lambda *a: seen.append(a)).status == "finished"
        assert seen and seen[0][0] == "processing" and seen[0][2] == len(client.job(jobs[0].pk).stages)
        with pytest.raises(JobFailed) as failed:
            client.wait_for_results(jobs[1].pk, timeout=5)
        assert failed.value.job.error == "the processor exited with status 1" and "status 1" in str(failed.value)
        with pytest.raises(JobCancelled):
            client.wait_for_results(jobs[2].pk, timeout=5)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as timeout:
            client.wait_for_results(jobs[3].pk, timeout=0.5, interval=0.1)
        assert isinstance(timeout.value, TimeoutError) and isinstance(timeout.value, SdkError)
        assert time.monotonic() - started < 3 and "pending" in str(timeout.value)
        for error in (failed.value, timeout.value):
            assert info.series_uid not in str(error) and "SDKW-1" not in str(error)


def test_upload_problems_studies_and_the_jobs_of_a_study(live_server, key, celery_worker_process, tmp_path):
    one = write_image_series(tmp_path / "in" / "ct", PatientSpec("SDKP-1", "Prob^Paul"), n_slices=3, rows=16,
                             cols=16, seed="sdk-p1")
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    two = write_image_series(tmp_path / "other", PatientSpec("SDKP-2", "Prob^Pia"), n_slices=2, rows=16, cols=16,
                             seed="sdk-p2")
    with Client(live_server.url, api_key=key) as client:
        stages = set()
        result = client.upload([tmp_path / "in", tmp_path / "other"], progress=lambda s, d, t: stages.add(s))
        assert stages == {"upload", "import"} and (result.files_seen, result.instances_new) == (6, 5)
        problems = client.upload_problems(result.upload_id)
        assert problems.status == "finished" and not problems.ok and problems.error == ""
        assert [p["path"] for p in problems.ignored] == ["in/notes.txt"]
        assert problems.ignored[0]["reason"].startswith("not a DICOM file")
        assert sorted(client.upload_studies(result.upload_id)) == sorted([one.study_uid, two.study_uid])
        assert client.upload_jobs(result.upload_id) == []

        job_one = create_job(project_key="SDKP", series_id=SeriesRow.objects.get(series_instance_uid=one.series_uid).pk)
        create_job(project_key="SDKP", series_id=SeriesRow.objects.get(series_instance_uid=two.series_uid).pk)
        assert [j.id for j in client.study_jobs(one.study_uid)] == [job_one.pk]
        assert [j.id for j in client.jobs(series_uid=one.series_uid)] == [job_one.pk]
        assert sorted(client.upload_jobs(result.upload_id)) == sorted(j.pk for j in JobRow.objects.all())


class ImportNeverStarts(httpx.HTTPTransport):
    """Answers every poll of an upload as still queued (a worker may run in this test session)."""

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "GET" and "/api/uploads/" in request.url.path:
            body = httpx.Response(200, content=response.read()).json()
            body["status"] = "pending"
            body["progress"] = {**(body.get("progress") or {}), "status": "pending", "done": 0}
            return httpx.Response(response.status_code, json=body, request=request)
        return response


def test_waiting_for_an_import_times_out_with_a_timeout_error(live_server, key, tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"x" * 10)
    with Client(live_server.url, api_key=key, transport=ImportNeverStarts()) as client:
        queued = client.upload(tmp_path / "a.dcm", wait=False)
        assert queued.status == "pending"
        started = time.monotonic()
        with pytest.raises(WaitTimeout):
            client.wait_for_import(queued.id, timeout=0.3, interval=0.1)
        assert time.monotonic() - started < 3


class OldServer(httpx.HTTPTransport):
    """Answers the upload creation without the project fields, as a server before them did."""

    def __init__(self):
        super().__init__()
        self.chunks = 0

    def handle_request(self, request):
        response = super().handle_request(request)
        if request.method == "PUT":
            self.chunks += 1
        if request.method == "POST" and request.url.path.endswith("/api/uploads/"):
            body = {k: v for k, v in httpx.Response(200, content=response.read()).json().items()
                    if k not in ("project", "subject", "event", "slot", "template")}
            return httpx.Response(response.status_code, json=body, request=request)
        return response


def test_project_fields_are_not_silently_dropped_by_an_older_server(live_server, key, tmp_path):
    from dicomflow.processing.services import ensure_builtin_templates
    from dicomflow.projects.services import create_project

    create_project("P1", "P1")  # the server accepts the fields; the older server's answer drops them
    ensure_builtin_templates()
    (tmp_path / "a.dcm").write_bytes(b"x" * 10)
    transport = OldServer()
    with Client(live_server.url, api_key=key, transport=transport) as client, pytest.raises(UnsupportedByServer):
        client.upload(tmp_path / "a.dcm", project="P1", template="ct-body-lungs")
    assert transport.chunks == 0


def _zip(members: list[tuple[str, bytes, int | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _serving(body: bytes) -> httpx.MockTransport:
    """``GET /api/jobs/<id>/results/`` answering ``body`` (the endpoint is the server's part)."""

    def handler(request):
        assert request.url.path == "/api/jobs/7/results/"
        return httpx.Response(200, content=body, headers={"Content-Type": "application/zip"})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("member", [
    ("../escaped.dcm", b"x", None),
    ("results/../../escaped.dcm", b"x", None),
    ("/tmp/escaped.dcm", b"x", None),
    ("link.dcm", b"/etc/passwd", stat.S_IFLNK | 0o777),
])
def test_download_results_refuses_a_zip_slip_archive_and_writes_nothing(tmp_path, member):
    body = _zip([("results/RS.dcm", b"rtstruct", None), member])
    folder = tmp_path / "out" / "results"
    with Client("http://server", api_key="k", transport=_serving(body)) as client, pytest.raises(UnsafeArchive):
        client.download_results(7, folder)
    assert list(folder.rglob("*")) == [] and not (tmp_path / "out" / "escaped.dcm").exists()
    assert not (tmp_path / "escaped.dcm").exists()


def test_download_results_extracts_a_good_archive(tmp_path):
    body = _zip([("RS.dcm", b"rtstruct", None), ("report/summary.txt", b"ok", None)])
    with Client("http://server", api_key="k", transport=_serving(body)) as client:
        written = client.download_results(7, tmp_path / "res")
    assert written == [tmp_path / "res" / "RS.dcm", tmp_path / "res" / "report" / "summary.txt"]
    assert written[0].read_bytes() == b"rtstruct" and sorted(p.name for p in (tmp_path / "res").iterdir()) == [
        "RS.dcm", "report"]


def test_download_results_into_a_relative_folder(tmp_path, monkeypatch):
    """The README's example downloads into "results", relative to where it runs."""
    monkeypatch.chdir(tmp_path)
    body = _zip([("RS.dcm", b"rtstruct", None)])
    with Client("http://server", api_key="k", transport=_serving(body)) as client:
        written = client.download_results(7, "results")
    assert written == [tmp_path / "results" / "RS.dcm"] and written[0].read_bytes() == b"rtstruct"
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["RS.dcm"]  # no staging folder left
