"""The dicomflow REST client (httpx). No Django: usable from any Python with ``httpx``.

The icometrix-style flow, end to end::

    with Client("http://127.0.0.1:8000", api_key=KEY) as df:
        result = df.upload("ct/", project="TRIAL1", template="ct-body-lungs", progress=print)
        for job_id in df.upload_jobs(result.upload_id, timeout=60):
            job = df.wait_for_results(job_id, timeout=1800)
            df.download_results(job.id, "results/")

Robustness: every request has a timeout (``timeout=``); idempotent requests (GET, PUT, DELETE and
POSTs that are safe to repeat, such as finalizing an upload) are retried after connection errors
and 502/503/504 answers with bounded, jittered exponential back-off (``retries``,
``retry_wait``, ``max_retry_wait``; a ``Retry-After`` header is honoured up to that bound). Other
POSTs are repeated only when the request never reached the server (the connection could not be
opened), so nothing is done twice. Refusals raise :class:`ApiError` with the server's problem
details (``status``, ``detail``, ``code``).

Uploads are resumable: the client declares the files (size, sha256), sends each in chunks from
the offset the server reports, and after a network failure asks the server where each file
stands and carries on from there (``upload(..., session=ID)`` resumes one started by another
process). Then it finalizes and waits for the import's result.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from dicomflow.sdk.archive import extract_zip
from dicomflow.sdk.errors import (
    ApiError,
    JobCancelled,
    JobFailed,
    UnsupportedByServer,
    UploadFailed,
    WaitTimeout,
)
from dicomflow.sdk.models import (
    ImportResult,
    ImportRun,
    Instance,
    Job,
    Patient,
    Series,
    Study,
    UploadProblems,
    UploadSession,
    from_dict,
)

DEFAULT_CHUNK = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0  # seconds per request (connect: at most 10)
ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUSES = frozenset({502, 503, 504})
# the request never left this machine: repeating it cannot do anything twice, whatever the method
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
UPLOAD_FIELDS = ("project", "subject", "event", "slot", "template")
UPLOAD_DONE = {"finished", "completed"}  # "completed": servers before the one status vocabulary
UPLOAD_ENDED = {"failed", "cancelled"}
JOB_FINISHED, JOB_FAILED, JOB_CANCELLED = "finished", "failed", "cancelled"


class Client:
    """``Client("http://host:8000", api_key="...")`` — the key is sent as ``X-Api-Key`` on every call.

    ``timeout``: seconds per request (or an ``httpx.Timeout``). ``retries``: how often an
    idempotent request is repeated after a connection error or a 502/503/504, waiting
    ``retry_wait`` × 2^attempt seconds (jittered, at most ``max_retry_wait``) in between.
    """

    def __init__(self, base_url: str, api_key: str | None = None, *, token: str | None = None,
                 auth: tuple[str, str] | None = None, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
                 chunk_size: int = DEFAULT_CHUNK, retries: int = 5, retry_wait: float = 0.5,
                 max_retry_wait: float = 30.0, transport: httpx.BaseTransport | None = None):
        headers = {"Accept": "application/json"}
        api_key = api_key or token  # ``token=`` is the older name of the same key
        if api_key:
            headers["X-Api-Key"] = api_key
        self.base_url = base_url.rstrip("/")
        self.chunk_size = chunk_size
        self.retries = max(0, retries)
        self.retry_wait = retry_wait
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(base_url=self.base_url + "/api/", headers=headers, auth=auth,
                                  timeout=_timeout(timeout), transport=transport, follow_redirects=False)

    @classmethod
    def login(cls, base_url: str, username: str, password: str, **kwargs) -> Client:
        """A client with a new API key obtained for ``username``/``password`` (POST /api/auth/token/)."""
        client = cls(base_url, **kwargs)
        response = client._request("POST", "auth/token/", data={"username": username, "password": password})
        client._http.headers["X-Api-Key"] = response.json()["key"]
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------------
    def _request(self, method: str, url: str, *, retry: bool | None = None, **kwargs) -> httpx.Response:
        """One API call; ``retry`` (default: the method is idempotent) allows repeating it."""
        retry = method.upper() in IDEMPOTENT_METHODS if retry is None else retry
        return self._call(lambda: self._http.request(method, url, **kwargs), retry=retry)

    def _call(self, send: Callable[[], httpx.Response], *, retry: bool) -> httpx.Response:
        """Run ``send`` until it answers something other than a transient failure (or the retries
        are spent); raise :class:`ApiError` for an error answer."""
        attempt = 0
        while True:
            retry_after = None
            try:
                response = send()
            except httpx.TransportError as exc:
                if attempt >= self.retries or not (retry or isinstance(exc, NOT_SENT)):
                    raise
            else:
                if not retry or attempt >= self.retries or response.status_code not in RETRY_STATUSES:
                    _raise_for(response)
                    return response
                retry_after = _retry_after(response)
            time.sleep(self._backoff(attempt, retry_after))
            attempt += 1

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.max_retry_wait, retry_after)
        return min(self.max_retry_wait, self.retry_wait * 2 ** attempt) * random.uniform(0.5, 1.0)

    def _pages(self, url: str, params: dict[str, Any]) -> Iterator[dict]:
        params = {k: v for k, v in params.items() if v is not None}
        response = self._request("GET", url, params=params)
        while True:
            body = response.json()
            yield from body["results"]
            if not body.get("next"):
                return
            response = self._request("GET", body["next"])

    def _download_to(self, url: str, target: Path) -> None:
        """Stream ``url`` into ``target`` (repeated from the start after a transient failure)."""

        def send() -> httpx.Response:
            with self._http.stream("GET", url, headers={"Accept": "application/zip, application/json"}) as response:
                if response.status_code >= 400:
                    response.read()
                    return response
                with open(target, "wb") as out:
                    for block in response.iter_bytes(1024 * 1024):
                        out.write(block)
                return response

        self._call(send, retry=True)

    # --- catalog ---------------------------------------------------------------------------------
    def patients(self, **filters) -> list[Patient]:
        """Filters: ``patient_id``, ``name``, ``q``."""
        return [from_dict(Patient, d) for d in self._pages("patients/", filters)]

    def projects(self) -> list[dict]:
        """Research projects you belong to: ``[{"key", "name", "description", "created_at"}]``."""
        return list(self._pages("projects/", {}))

    def patient(self, id: int) -> Patient:
        return from_dict(Patient, self._request("GET", f"patients/{id}/").json())

    def studies(self, **filters) -> list[Study]:
        """Filters: ``patient`` (id), ``patient_id``, ``name``, ``study_uid``, ``accession_number``,
        ``modality``, ``date_from``, ``date_to`` (YYYY-MM-DD)."""
        return [from_dict(Study, d) for d in self._pages("studies/", filters)]

    def study(self, uid: str) -> Study:
        return from_dict(Study, self._request("GET", f"studies/{uid}/").json())

    def rt_tree(self, study_uid: str) -> dict:
        return self._request("GET", f"studies/{study_uid}/rt-tree/").json()

    def series(self, **filters) -> list[Series]:
        """Filters: ``patient``, ``patient_id``, ``study_uid``, ``series_uid``, ``modality``, dates."""
        return [from_dict(Series, d) for d in self._pages("series/", filters)]

    def get_series(self, uid: str) -> Series:
        """One series with its image geometry, RT details and stored checks."""
        return from_dict(Series, self._request("GET", f"series/{uid}/").json())

    def instances(self, **filters) -> list[Instance]:
        """Filters: ``series_uid``, ``sop_instance_uid``, ``sop_class_uid``."""
        return [from_dict(Instance, d) for d in self._pages("instances/", filters)]

    def download_series(self, uid: str, dest: str | os.PathLike) -> list[Path]:
        """Download a series. ``dest`` ending in ``.zip``: the ZIP is saved there (returns [dest]);
        otherwise ``dest`` is a folder the files are written into (returns their paths)."""
        dest = Path(dest)
        if dest.suffix.lower() == ".zip":
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._download_to(f"series/{uid}/download/", dest)
            return [dest]
        return self._download_and_extract(f"series/{uid}/download/", dest)

    def _download_and_extract(self, url: str, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".dicomflow-zip-", dir=folder) as tmp:
            archive = Path(tmp) / "download.zip"
            self._download_to(url, archive)
            return extract_zip(archive, folder)

    # --- imports ---------------------------------------------------------------------------------------
    def imports(self, source_kind: str | None = None, limit: int | None = None) -> list[ImportRun]:
        """Import runs, newest first (counts of conflicts/ignored; ``import_run(id)`` for the paths)."""
        runs = []
        for d in self._pages("imports/", {"source_kind": source_kind}):
            runs.append(from_dict(ImportRun, d))
            if limit is not None and len(runs) >= limit:
                break
        return runs

    def import_run(self, id: int) -> ImportRun:
        return from_dict(ImportRun, self._request("GET", f"imports/{id}/").json())

    # --- processing jobs ------------------------------------------------------------------------------
    def jobs(self, status: str | None = None, series_uid: str | None = None,
             study_uid: str | None = None) -> list[Job]:
        """Processing jobs you may see, newest first, filtered by status, series or study UID."""
        filters = {"status": status, "series_uid": series_uid, "study_uid": study_uid}
        return [from_dict(Job, d) for d in self._pages("jobs/", filters)]

    def study_jobs(self, study_uid: str) -> list[Job]:
        """The processing jobs of a study's series (GET /api/jobs/?study_uid=...).

        Kept to the study on this side too: by the jobs' ``study_instance_uid`` where the server
        gives it, else (older servers, which ignore the filter) by the study's series you see."""
        jobs = self.jobs(study_uid=study_uid)
        if all(j.study_instance_uid is not None for j in jobs):
            return [j for j in jobs if j.study_instance_uid == study_uid]
        series = {s.series_instance_uid for s in self.series(study_uid=study_uid)}
        return [j for j in jobs if j.series_instance_uid in series]

    def job(self, id: int) -> Job:
        """One job with its stages (status, done/total) and result paths."""
        return from_dict(Job, self._request("GET", f"jobs/{id}/").json())

    def job_log(self, id: int, level: str | None = None, stage: str | None = None) -> list[dict]:
        return list(self._pages(f"jobs/{id}/log/", {"level": level, "stage": stage}))

    def send_for_processing(self, series_uid: str, template: str | None = None, *, project: str) -> Job:
        """Start processing a catalogued series in ``project`` with ``template`` (None: the rules
        choose). POST /api/jobs/; the job runs on the server's worker."""
        body = {"series_uid": series_uid, "template": template, "project": project}
        return from_dict(Job, self._request("POST", "jobs/", json=body).json())

    def retry(self, job_id: int) -> Job:
        """Run a failed job again from the stage that failed."""
        return self._job_action(job_id, "retry")

    def cancel(self, job_id: int) -> Job:
        return self._job_action(job_id, "cancel", retry=True)  # cancelling twice is cancelling once

    def approve(self, job_id: int, reason: str = "") -> Job:
        """Quality control: accept a job's result (it goes on to re-identification and export)."""
        return self._job_action(job_id, "approve", reason=reason)

    def reject(self, job_id: int, reason: str) -> Job:
        """Quality control: refuse a job's result, saying why."""
        return self._job_action(job_id, "reject", reason=reason)

    def _job_action(self, job_id: int, action: str, *, reason: str | None = None, retry: bool = False) -> Job:
        body = {"reason": reason} if reason else {}
        return from_dict(Job, self._request("POST", f"jobs/{job_id}/{action}/", json=body, retry=retry).json())

    def wait_for_results(self, job_id: int, timeout: float = 3600.0, interval: float = 2.0,
                         progress: ProgressCallback | None = None) -> Job:
        """Poll a job until it is finished and return it. Raises :class:`JobFailed` or
        :class:`JobCancelled` when it ends otherwise, :class:`WaitTimeout` when ``timeout`` passes
        (the job goes on; wait again). ``progress("processing", stages_done, stages)``."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress and job.stages:
                progress("processing", sum(s["status"] in ("done", "skipped") for s in job.stages), len(job.stages))
            if job.status == JOB_FINISHED:
                return job
            if job.status == JOB_FAILED:
                raise JobFailed(job, f"job {job_id} failed: {job.error or 'no reason given'}")
            if job.status == JOB_CANCELLED:
                raise JobCancelled(job, f"job {job_id} was cancelled")
            if time.monotonic() + interval > deadline:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout:.0f} s "
                                  f"(status {job.status}, stage {job.current_stage or '-'})")
            time.sleep(interval)

    def download_results(self, job_id: int, folder: str | os.PathLike) -> list[Path]:
        """Download a finished job's (re-identified) results into ``folder``; the written paths.

        The ZIP is extracted all or nothing: a member with an absolute path, ``..`` or a link
        raises :class:`UnsafeArchive` and nothing is written."""
        return self._download_and_extract(f"jobs/{job_id}/results/", Path(folder))

    # --- uploads -----------------------------------------------------------------------------------------
    def upload_session(self, session_id: str) -> UploadSession:
        """The upload's state: status, bytes received, import progress and result."""
        return from_dict(UploadSession, self._request("GET", f"uploads/{session_id}/").json())

    def upload(self, path: str | os.PathLike | Iterable[str | os.PathLike], *, project: str | None = None,
               subject: str | None = None, event: str | None = None, slot: str | None = None,
               template: str | None = None, session: str | None = None, wait: bool = True,
               timeout: float = 3600.0, progress: ProgressCallback | None = None) -> ImportResult | UploadSession:
        """Upload files (DICOM or ZIP) or folders, resumably; returns the import's result.

        ``project`` (key), ``subject``, ``event``, ``slot`` and ``template`` say where the upload
        goes and how it is processed once imported (the server checks your role in the project).
        ``progress(stage, done, total)`` is called with ``"upload"`` (bytes) while sending and
        ``"import"`` (files) while the server imports. ``session`` resumes an upload begun
        earlier (same paths). With ``wait=False`` returns the queued session instead of waiting;
        ``timeout`` bounds the wait for the import.
        """
        files = _collect_all(path)
        fields = {k: v for k, v in {"project": project, "subject": subject, "event": event, "slot": slot,
                                    "template": template}.items() if v is not None}
        if session is None:
            declared = [{"name": name, "size": p.stat().st_size, "sha256": _sha256(p)} for p, name in files]
            # safe to repeat: a session created twice is an empty one the server purges
            state = self._request("POST", "uploads/", json={"files": declared, "source": "api", **fields},
                                  retry=True).json()
            if fields and not any(k in state for k in fields):
                raise UnsupportedByServer("this server does not take project, subject, event, slot or template on "
                                          "uploads (update it); nothing was sent")
        else:
            state = self._request("GET", f"uploads/{session}/").json()
            if len(state["files"]) != len(files):
                raise ApiError(409, "this upload session declares other files than the given path holds", "Mismatch")
        session_id = state["id"]
        total = sum(f["size"] for f in state["files"])
        sent = sum(f["received"] for f in state["files"])
        for (local, _name), entry in zip(files, state["files"], strict=True):
            sent += self._send_file(session_id, local, entry, progress, sent, total)
        finalized = self._request("POST", f"uploads/{session_id}/finalize/", retry=True).json()  # idempotent
        if not wait:
            return from_dict(UploadSession, finalized)
        return self.wait_for_import(session_id, timeout=timeout, progress=progress)

    def wait_for_import(self, upload_id: str, timeout: float = 3600.0, interval: float = 0.5,
                        progress: ProgressCallback | None = None) -> ImportResult:
        """Poll an upload until its import finishes; its result (counts, ``ignored``,
        ``conflicts``, ``series_uids``, and ``study_uids``/``job_ids`` when the server lists
        them). Raises :class:`UploadFailed` if it failed or was cancelled, :class:`WaitTimeout`
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._request("GET", f"uploads/{upload_id}/", params={"files": "0"}).json()
            job = _progress_of(state)
            if progress:
                progress("import", job["done"], job["total"])
            if job["status"] in UPLOAD_DONE:
                return _import_result(state, upload_id)
            if job["status"] in UPLOAD_ENDED:
                raise UploadFailed(200, job["error"] or f"the upload was {job['status']}", job["status"])
            if time.monotonic() + interval > deadline:
                raise WaitTimeout(f"the import of upload {upload_id} did not finish within {timeout:.0f} s")
            time.sleep(interval)

    wait = wait_for_import  # the older name

    def upload_problems(self, upload_id: str) -> UploadProblems:
        """The files an upload's import ignored (with the reason) or found in conflict, and the
        error of a failed upload."""
        state = self._request("GET", f"uploads/{upload_id}/", params={"files": "0"}).json()
        result = state.get("result") or {}
        return UploadProblems(status=state["status"], ignored=list(result.get("ignored") or []),
                              conflicts=list(result.get("conflicts") or []), error=_progress_of(state)["error"] or "")

    def upload_studies(self, upload_id: str) -> list[str]:
        """The study UIDs an upload brought in: the server's ``studies`` list, or (older servers)
        the studies of the series its import touched."""
        state = self._request("GET", f"uploads/{upload_id}/", params={"files": "0"}).json()
        if isinstance(state.get("studies"), list):
            return [str(s) for s in state["studies"]]
        seen: dict[str, None] = {}
        for uid in (state.get("result") or {}).get("series_uids") or []:
            seen.setdefault(self.get_series(uid).study_instance_uid, None)
        return list(seen)

    def upload_jobs(self, upload_id: str, timeout: float = 0.0, interval: float = 1.0) -> list[int]:
        """The processing jobs an upload started (its template, or the rules), waiting up to
        ``timeout`` seconds for the first to appear (they are created after the import); [] if none.
        Older servers that do not list them: the jobs of the upload's studies."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._request("GET", f"uploads/{upload_id}/", params={"files": "0"}).json()
            if isinstance(state.get("jobs"), list):
                jobs = [int(j) for j in state["jobs"]]
            else:
                jobs = sorted({j.id for uid in self.upload_studies(upload_id) for j in self.study_jobs(uid)})
            if jobs or time.monotonic() + interval > deadline:
                return jobs
            time.sleep(interval)

    def _send_file(self, session_id: str, local: Path, entry: dict, progress, sent: int, total: int) -> int:
        index, size, offset = entry["index"], entry["size"], entry["received"]
        if entry["complete"]:
            return 0
        start = offset
        failures, resent = 0, False
        with open(local, "rb") as fh:
            while offset < size:
                fh.seek(offset)
                data = fh.read(min(self.chunk_size, size - offset))
                try:  # a chunk PUT at an offset is idempotent: _request repeats it after network failures
                    response = self._request("PUT", f"uploads/{session_id}/files/{index}/", content=data,
                                             headers={"Upload-Offset": str(offset),
                                                      "Content-Type": "application/octet-stream"})
                    offset = response.json()["received"]
                    failures = 0
                except ApiError as exc:
                    if exc.offset is not None and exc.code == "UploadOffsetError" and failures < self.retries:
                        offset, failures = exc.offset, failures + 1  # the server holds other bytes: go on from there
                        continue
                    if exc.status == 422 and exc.code == "UploadChecksumError" and not resent:
                        resent, offset = True, 0  # the server dropped the file's bytes: send it once more
                        continue
                    if exc.status >= 500 and failures < self.retries:
                        time.sleep(self._backoff(failures))
                        failures += 1
                        offset = self._server_offset(session_id, index)
                        continue
                    raise
                if progress:
                    progress("upload", sent + offset - start, total)
        return offset - start

    def _server_offset(self, session_id: str, index: int) -> int:
        state = self._request("GET", f"uploads/{session_id}/").json()
        return state["files"][index]["received"]


def _timeout(value: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    return httpx.Timeout(value, connect=min(value, 10.0))


def _retry_after(response: httpx.Response) -> float | None:
    """A ``Retry-After`` given in seconds (dates are ignored: the back-off applies)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _import_result(state: dict, upload_id: str) -> ImportResult:
    extra = {"import_run": state.get("import_run"), "session": upload_id}
    if isinstance(state.get("studies"), list):
        extra["study_uids"] = [str(s) for s in state["studies"]]
    if isinstance(state.get("jobs"), list):
        extra["job_ids"] = [int(j) for j in state["jobs"]]
    return from_dict(ImportResult, (state.get("result") or {}) | extra)


def _raise_for(response: httpx.Response) -> None:
    """An error answer → :class:`ApiError` with the problem details' ``detail``, ``code``, ``title``."""
    if response.status_code < 400:
        return
    detail, code, offset, title = f"the server answered HTTP {response.status_code}", "", None, ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or body)
        code = str(body.get("code") or "")
        offset = body.get("offset")
        title = str(body.get("title") or "")
    elif body is not None:
        detail = str(body)
    raise ApiError(response.status_code, detail, code, offset, title)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _collect_all(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """The files of one or several paths, each with the name it is declared under (unique)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = [item for p in paths for item in _collect(Path(p))]
    names = [name for _, name in files]
    if not files:
        raise FileNotFoundError("nothing to upload: no path given")
    if len(set(names)) != len(names):
        raise ValueError("two of the given files would be uploaded under the same name; upload them separately")
    return files


def _collect(path: Path) -> list[tuple[Path, str]]:
    """The files to send with their names: a file alone, or a folder's regular files (sorted, relative)."""
    if path.is_file():
        return [(path, path.name)]
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    out = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = Path(root) / name
            if full.is_file() and not full.is_symlink():
                out.append((full, str(full.relative_to(path.parent))))
    if not out:
        raise FileNotFoundError(f"the folder {path} holds no files")
    return out


def _progress_of(state: dict) -> dict:
    """The upload's progress in the one format of long jobs; older servers' fields as a fallback."""
    if isinstance(state.get("progress"), dict):
        return state["progress"]
    return {"status": state.get("status"), "done": state.get("import_done", 0), "total": state.get("import_total", 0),
            "error": state.get("error_message", "")}
