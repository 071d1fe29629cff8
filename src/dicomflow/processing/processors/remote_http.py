"""``remote.http``: a remote processing server over HTTP, with the protocol of the DRAW client.

Where the server is and how we authenticate is the **operator's** business: a template names an
``endpoint`` registered in the operator registry (:mod:`dicomflow.core.operator_registry`,
``settings.DICOMFLOW_PROCESSORS``: URL, the ``DICOMFLOW_TOKEN_*`` variable holding its credential,
an HTTP proxy, TLS verification). A template that carries a ``url``, ``token_env``, ``token``,
``proxy``, ``verify_tls`` or ``headers`` of its own is refused when it runs, before anything is
sent: a template editor can neither choose where the data goes nor which secret goes with it.

Protocol (``{url}`` is the endpoint's URL; all JSON is UTF-8; every request carries
``Authorization: Bearer <access token>`` when the endpoint has a token variable):

1. **Health** — ``GET {url}/health`` → 200 ``{"status": "ok"}``. Tried up to ``health_retries``
   times with back-off (``retry_seconds``, doubling); nothing is uploaded to a server that is not
   healthy.
2. **Token** (endpoints with a ``token_variable``) — ``POST {url}/auth/token`` with
   ``Authorization: Bearer <credential>`` (the variable's value) → 200
   ``{"access_token": "...", "expires_in": seconds}``; the access token is used from then on. A
   server without this route (404) takes the credential itself as bearer token. **On a 401** from
   any request a new access token is fetched once and the request repeated; a second 401 ends the
   job ("the server refused our token").
3. **Upload** — ``POST {url}/tasks`` with the de-identified series as a ZIP body, headers
   ``Content-Type: application/zip``, ``X-Content-SHA256: <hex digest of the body>`` and
   ``X-Dicomflow-Options: <the template's options as JSON>`` → 201 ``{"id": "<task id>",
   "sha256": "<hex digest the server computed>"}``. A digest that is missing or differs ends the
   job ("upload not confirmed") and the task is deleted (``DELETE {url}/tasks/{id}``).
4. **Polling** — ``GET {url}/tasks/{id}`` → 200 ``{"status": "queued"|"running"|"done"|"failed",
   "message": "...", "sha256": "<hex digest of the result ZIP>"}``, first after ``poll_seconds``,
   then each wait 1.5 × longer up to ``max_poll_seconds``, until ``timeout_seconds`` have passed
   since the upload (then the task is deleted and the job fails). **404 or 410**: the server no
   longer knows the task (restart, expiry) — the job ends with that error instead of polling for ever.
5. **Download** — ``GET {url}/tasks/{id}/result`` → 200, a ZIP of DICOM files (optionally with an
   ``X-Content-SHA256`` header). Its SHA-256 must equal the ``sha256`` of the status; a mismatch is
   downloaded once more (a damaged transfer heals, a wrong result does not), then the job fails.
   The ZIP is unpacked with the safe extractor (zip-slip, bombs, links refused).
6. **Verification** — every returned file must be DICOM referencing exactly the de-identified
   series that was sent (its instances, study and frame of reference), as the verifying stage
   checks again later.
7. **Confirmation** — ``POST {url}/tasks/{id}/confirm`` with ``{"accepted": true}`` once the result
   is verified (the server may then delete its copy of the series and the result), or
   ``{"accepted": false, "reason": "..."}`` when it was refused (best effort).

Transient failures — connection errors, time-outs and HTTP 502/503/504 — are retried on every step
up to ``retries`` times with back-off; other answers end the job with the status code and step.
Requests go through the endpoint's ``proxy`` when it has one; proxy variables of the environment
(``HTTP_PROXY`` …) are ignored, so only the operator's setting applies.

Template parameters: ``endpoint`` (required); ``options`` (sent as is); ``timeout_seconds`` (3600)
for the whole task; ``poll_seconds`` (2); ``max_poll_seconds`` (30); ``request_timeout`` (60);
``health_retries`` (3); ``retries`` (5); ``retry_seconds`` (1). docs/remote-processing.md has the
protocol with examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

from dicomflow.errors import ConfigurationError, DicomflowError, ProcessingError
from dicomflow.processing.processors import ProcessorRequest

NAME = "remote.http"
#: parameters only the operator's registry may set; a template carrying one is refused
FORBIDDEN_PARAMETERS = ("url", "token_env", "token", "proxy", "verify_tls", "headers")
TRANSIENT = frozenset({502, 503, 504})
MAX_BACKOFF = 30.0


class _Refused(ProcessingError):
    """The server answered something that ends the job."""


def check_parameters(parameters: dict) -> str:
    """The endpoint name a template's parameters give; refuses what only the operator may set."""
    present = [p for p in FORBIDDEN_PARAMETERS if p in parameters]
    if present:
        raise ConfigurationError(
            f"{NAME}: a template may not carry {', '.join(repr(p) for p in present)}; it names an "
            "HTTP endpoint registered by the operator ('endpoint'), whose URL, token variable and proxy "
            "live in the operator registry (DICOMFLOW_PROCESSORS)")
    endpoint = parameters.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ConfigurationError(f"{NAME}: parameter 'endpoint' (the name of an HTTP endpoint registered "
                                 "by the operator) is missing")
    return endpoint


def _zip_series(paths: list[Path], target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:  # pixel data barely compresses
        for i, path in enumerate(paths):
            zf.write(path, arcname=f"{i:05d}.dcm")  # names without any value of the data
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number(params: dict, name: str, default: float, minimum: float = 0.0) -> float:
    try:
        value = float(params.get(name, default))
    except (TypeError, ValueError):
        value = -1.0
    if value < minimum:
        raise ConfigurationError(f"{NAME}: parameter '{name}' must be a number of at least {minimum:g}")
    return value


class _Session:
    """One endpoint's HTTP client: bearer token with refresh on 401, retries of transient failures."""

    def __init__(self, endpoint, credential: str | None, params: dict, log):
        import httpx

        self.httpx = httpx
        self.endpoint, self.credential, self.log = endpoint, credential, log
        self.url = endpoint.url.rstrip("/")
        self.retries = int(_number(params, "retries", 5))
        self.retry_seconds = _number(params, "retry_seconds", 1.0)
        self.client = httpx.Client(timeout=_number(params, "request_timeout", 60.0, minimum=0.001),
                                   proxy=endpoint.proxy or None, verify=endpoint.verify_tls, trust_env=False,
                                   follow_redirects=False)
        self.token: str | None = None
        self.download_sha256 = ""

    def close(self) -> None:
        self.client.close()

    def backoff(self, attempt: int) -> float:
        return min(MAX_BACKOFF, self.retry_seconds * (2 ** attempt))

    # -- authentication ----------------------------------------------------------------------------
    def authenticate(self) -> None:
        """A fresh access token from the credential (or the credential itself for simple servers)."""
        if self.credential is None:
            return
        response = self.send("POST", "/auth/token", what="token request", auth=False,
                             headers={"Authorization": f"Bearer {self.credential}"})
        if response.status_code == 404:
            self.token = self.credential
            return
        if response.status_code in (401, 403):
            raise _Refused(f"{NAME}: endpoint '{self.endpoint.name}' refused our credential "
                           f"(HTTP {response.status_code} to the token request); the operator must check "
                           f"{self.endpoint.token_variable}")
        self.expect(response, (200, 201), "token request")
        token = self.json(response, "token request").get("access_token")
        if not isinstance(token, str) or not token:
            raise _Refused(f"{NAME}: the token request answered no 'access_token'")
        self.token = token

    # -- requests ----------------------------------------------------------------------------------
    def send(self, method: str, path: str, *, what: str, auth: bool = True, body_path: Path | None = None,
             download: Path | None = None, **kwargs):
        """One request, retried on transient failures, with one token refresh on 401. With ``download``
        a 200 answer's body is written there and its SHA-256 kept in ``self.download_sha256``."""
        refreshed = False
        attempt = 0
        while True:
            headers = dict(kwargs.pop("headers", None) or {})
            kwargs_now = dict(kwargs)
            if auth and self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            try:
                if download is not None:
                    response = self._stream(method, path, headers, download)
                elif body_path is not None:
                    with open(body_path, "rb") as body:
                        response = self.client.request(method, self.url + path, headers=headers, content=body,
                                                       **kwargs_now)
                else:
                    response = self.client.request(method, self.url + path, headers=headers, **kwargs_now)
            except self.httpx.TransportError as exc:
                problem = exc.__class__.__name__
                response = None
            else:
                problem = f"HTTP {response.status_code}"
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response is not None and response.status_code == 401 and auth and self.credential is not None:
                if refreshed:
                    raise _Refused(f"{NAME}: the server refused our token (HTTP 401 to the {what}) even after "
                                   "a token refresh")
                self.log("WARNING", f"{NAME}: HTTP 401 to the {what}: refreshing the token")
                self.authenticate()
                refreshed = True
                continue
            if response is not None and response.status_code not in TRANSIENT:
                return response
            if attempt >= self.retries:
                raise _Refused(f"{NAME}: the {what} failed {attempt + 1} time(s) (last: {problem}); "
                               f"endpoint '{self.endpoint.name}' is not answering properly")
            wait = self.backoff(attempt)
            self.log("WARNING", f"{NAME}: {problem} to the {what}; trying again in {wait:g} s")
            time.sleep(wait)
            attempt += 1

    def _stream(self, method: str, path: str, headers: dict, target: Path):
        with self.client.stream(method, self.url + path, headers=headers) as response:
            if response.status_code == 200:
                digest = hashlib.sha256()
                with open(target, "wb") as fh:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        fh.write(chunk)
                self.download_sha256 = digest.hexdigest()
            else:
                response.read()
        return response

    @staticmethod
    def expect(response, codes: tuple[int, ...], what: str) -> None:
        if response.status_code not in codes:
            raise _Refused(f"{NAME}: the server answered HTTP {response.status_code} to the {what}")

    @staticmethod
    def json(response, what: str) -> dict:
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise _Refused(f"{NAME}: the server's answer to the {what} is not a JSON object")
        return document

    def quietly(self, method: str, path: str, **kwargs) -> None:
        """A best-effort notice to the server (task deletion, refusal): its failure changes nothing."""
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self.client.request(method, self.url + path, headers=headers, **kwargs)
        except self.httpx.HTTPError:
            pass


def _health(session: _Session, tries: int) -> None:
    last = ""
    for attempt in range(tries):
        try:
            response = session.client.get(session.url + "/health")
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except session.httpx.TransportError as exc:
            last = exc.__class__.__name__
        if attempt + 1 < tries:
            wait = session.backoff(attempt)
            session.log("WARNING", f"{NAME}: health check {attempt + 1} of {tries} failed ({last}); "
                                   f"again in {wait:g} s")
            time.sleep(wait)
    raise ProcessingError(f"{NAME}: endpoint '{session.endpoint.name}' is not healthy after {tries} check(s) "
                          f"(last: {last}); nothing was sent")


def _sent(paths: list[Path]) -> dict:
    """What the result must reference: the de-identified series sent (as the verifying stage reads it)."""
    import pydicom

    instances, series, studies, frames = [], set(), set(), set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                                            "FrameOfReferenceUID"])
        instances.append(str(ds.SOPInstanceUID))
        series.add(str(ds.SeriesInstanceUID))
        studies.add(str(ds.StudyInstanceUID))
        frames.add(str(ds.get("FrameOfReferenceUID", "")))
    if len(series) != 1 or len(studies) != 1:
        raise ProcessingError(f"{NAME}: the input is not one series")
    return {"deid_series_uid": series.pop(), "deid_study_uid": studies.pop(), "deid_instances": instances,
            "deid_frame_of_reference_uid": frames.pop() if len(frames) == 1 else ""}


def _download(session: _Session, task: str, target: Path, expected: str) -> None:
    for attempt in (1, 2):
        response = session.send("GET", f"/tasks/{task}/result", what="result download", download=target)
        session.expect(response, (200,), "result download")
        header = response.headers.get("X-Content-SHA256", "").lower()
        if session.download_sha256 == expected and (not header or header == expected):
            return
        session.log("WARNING", f"{NAME}: the result of task {task} does not match its SHA-256 "
                               f"(download {attempt} of 2)")
    raise _Refused(f"{NAME}: the downloaded result does not match its checksum (SHA-256) twice; not used")


def run(request: ProcessorRequest) -> list[Path]:
    import httpx
    from django.conf import settings

    from dicomflow.core.archive import extract_archive
    from dicomflow.processing import results
    from dicomflow.processing.registry import operator_registry

    params = request.parameters
    name = check_parameters(params)
    endpoint = operator_registry().http_endpoint(name)
    credential = endpoint.token(os.environ)  # only a DICOMFLOW_TOKEN_* variable (checked by the registry)
    timeout = _number(params, "timeout_seconds", 3600.0, minimum=0.001)
    poll = _number(params, "poll_seconds", 2.0)
    max_poll = max(poll, _number(params, "max_poll_seconds", 30.0))
    health_tries = max(1, int(_number(params, "health_retries", 3, minimum=1)))
    options = json.dumps(params.get("options", {}))
    session = _Session(endpoint, credential, params, request.log)
    task = ""
    try:
        _health(session, health_tries)
        session.authenticate()
        upload = _zip_series(request.paths, request.work_dir / "upload.zip")
        digest = _sha256(upload)
        response = session.send("POST", "/tasks", what="upload", body_path=upload,
                                headers={"Content-Type": "application/zip", "X-Content-SHA256": digest,
                                         "X-Dicomflow-Options": options})
        session.expect(response, (200, 201, 202), "upload")
        answer = session.json(response, "upload")
        task = str(answer.get("id") or "")
        if not task or "/" in task or len(task) > 200:
            raise _Refused(f"{NAME}: the upload was answered without a usable task id")
        if str(answer.get("sha256", "")).lower() != digest:
            session.quietly("DELETE", f"/tasks/{task}")
            raise _Refused(f"{NAME}: upload not confirmed: the server's SHA-256 of what it received differs "
                           "from what was sent (or is missing); the task was deleted")
        request.log("INFO", f"{NAME}: uploaded {len(request.paths)} files to endpoint '{endpoint.name}' as task "
                            f"{task} (SHA-256 confirmed)")
        deadline = time.monotonic() + timeout
        wait = poll
        while True:
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            status = session.send("GET", f"/tasks/{task}", what="status request")
            if status.status_code in (404, 410):
                raise _Refused(f"{NAME}: the server no longer knows task {task} (HTTP {status.status_code}: lost, "
                               "expired or the server restarted); the job ends here — retry it to send the "
                               "series again")
            session.expect(status, (200,), "status request")
            state = session.json(status, "status request")
            if state.get("status") == "done":
                break
            if state.get("status") == "failed":
                raise _Refused(f"{NAME}: the server failed the task: {str(state.get('message') or 'no reason')[:300]}")
            if time.monotonic() >= deadline:
                session.quietly("DELETE", f"/tasks/{task}")
                raise _Refused(f"{NAME}: task {task} not done within the time limit ({timeout:g} s); stopped "
                               "waiting and asked the server to drop it")
            wait = min(max_poll, wait * 1.5 if wait else 0.1)
        expected = str(state.get("sha256", "")).lower()
        if len(expected) != 64:
            raise _Refused(f"{NAME}: the server gave no SHA-256 for the result of task {task}")
        download = request.work_dir / "result.zip"
        _download(session, task, download, expected)
        try:
            extracted = extract_archive(download, request.work_dir / "result", settings.ARCHIVE_LIMITS)
        except DicomflowError as exc:
            raise _Refused(f"{NAME}: the result archive was refused: {exc}") from None
        sent = _sent(request.paths)
        problems = [f"{item.path.name}: {why}" for item in extracted.files
                    if (why := results.verify(item.path, sent))]
        if not extracted.files:
            problems.append("the result archive holds no file")
        if problems:
            reason = "the result does not reference the series sent: " + "; ".join(problems[:5])
            session.quietly("POST", f"/tasks/{task}/confirm", json={"accepted": False, "reason": reason[:500]})
            raise _Refused(f"{NAME}: {reason}")
        written = []
        for item in extracted.files:
            target = request.output_dir / f"{len(written):05d}-{item.path.name}"
            os.replace(item.path, target)
            written.append(target)
        confirm = session.send("POST", f"/tasks/{task}/confirm", what="confirmation", json={"accepted": True})
        if confirm.status_code not in (200, 202, 204):
            request.log("WARNING", f"{NAME}: the server answered HTTP {confirm.status_code} to the confirmation; "
                                   "it may keep its copy of task " + task)
        else:
            request.log("INFO", f"{NAME}: result of task {task} confirmed; the server may delete its copy")
        request.log("INFO", f"{NAME}: downloaded {len(written)} result file(s), checksum verified")
        return written
    except httpx.HTTPError as exc:
        raise ProcessingError(f"{NAME}: cannot talk to endpoint '{endpoint.name}' ({exc.__class__.__name__})") from None
    except (ValueError, KeyError) as exc:
        raise ProcessingError(f"{NAME}: cannot talk to endpoint '{endpoint.name}' ({exc.__class__.__name__})") from None
    finally:
        session.close()
