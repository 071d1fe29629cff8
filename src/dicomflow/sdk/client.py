"""The dicomflow REST client (httpx). No Django: usable from any Python with ``httpx``.

Uploads are resumable: the client declares the files (size, sha256), sends each in chunks from
the offset the server reports, and after a network failure asks the server where each file
stands and carries on from there (``upload(..., session=ID)`` resumes one started by another
process). Then it finalizes and waits for the import's result.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from dicomflow.sdk.models import (
    ImportResult,
    ImportRun,
    Instance,
    Job,
    Patient,
    Series,
    Study,
    UploadSession,
    from_dict,
)

DEFAULT_CHUNK = 4 * 1024 * 1024
ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


class ApiError(Exception):
    """The server refused a request; ``message`` is the server's explanation."""

    def __init__(self, status: int, message: str, code: str = "", offset: int | None = None):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message
        self.code = code
        self.offset = offset


class Client:
    """``Client("http://host:8000", api_key="...")`` — the key is sent as ``X-Api-Key`` on every call."""

    def __init__(self, base_url: str, api_key: str | None = None, *, token: str | None = None,
                 auth: tuple[str, str] | None = None,
                 timeout: float = 60.0, chunk_size: int = DEFAULT_CHUNK, retries: int = 5,
                 retry_wait: float = 0.5, transport: httpx.BaseTransport | None = None):
        headers = {"Accept": "application/json"}
        api_key = api_key or token  # ``token=`` is the older name of the same key
        if api_key:
            headers["X-Api-Key"] = api_key
        self.base_url = base_url.rstrip("/")
        self.chunk_size = chunk_size
        self.retries = retries
        self.retry_wait = retry_wait
        self._http = httpx.Client(base_url=self.base_url + "/api/", headers=headers, auth=auth, timeout=timeout,
                                  transport=transport, follow_redirects=False)

    @classmethod
    def login(cls, base_url: str, username: str, password: str, **kwargs) -> Client:
        """A client with a new API key obtained for ``username``/``password``."""
        with httpx.Client(timeout=kwargs.get("timeout", 60.0)) as http:
            response = http.post(base_url.rstrip("/") + "/api/auth/token/",
                                 data={"username": username, "password": password})
        _raise_for(response)
        return cls(base_url, api_key=response.json()["key"], **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, url, **kwargs)
        _raise_for(response)
        return response

    def _pages(self, url: str, params: dict[str, Any]) -> Iterator[dict]:
        params = {k: v for k, v in params.items() if v is not None}
        response = self._request("GET", url, params=params)
        while True:
            body = response.json()
            yield from body["results"]
            if not body.get("next"):
                return
            response = self._request("GET", body["next"])

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
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            archive = Path(tmp) / "series.zip"
            self._download_to(f"series/{uid}/download/", archive)
            written = []
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = os.path.basename(info.filename)  # our members are flat; never trust a path
                    if info.is_dir() or not name or name in (".", ".."):
                        continue
                    target = dest / name
                    with zf.open(info) as src, open(target, "wb") as out:
                        while block := src.read(1024 * 1024):
                            out.write(block)
                    written.append(target)
        return written

    def _download_to(self, url: str, target: Path) -> None:
        with self._http.stream("GET", url, headers={"Accept": "application/zip, application/json"}) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            with open(target, "wb") as out:
                for block in response.iter_bytes(1024 * 1024):
                    out.write(block)

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
    def jobs(self, status: str | None = None, series_uid: str | None = None) -> list[Job]:
        return [from_dict(Job, d) for d in self._pages("jobs/", {"status": status, "series_uid": series_uid})]

    def job(self, id: int) -> Job:
        """One job with its stages (status, done/total) and result paths."""
        return from_dict(Job, self._request("GET", f"jobs/{id}/").json())

    def job_log(self, id: int, level: str | None = None, stage: str | None = None) -> list[dict]:
        return list(self._pages(f"jobs/{id}/log/", {"level": level, "stage": stage}))

    # --- uploads -----------------------------------------------------------------------------------------
    def upload_session(self, session_id: str) -> UploadSession:
        return from_dict(UploadSession, self._request("GET", f"uploads/{session_id}/").json())

    def upload(self, path: str | os.PathLike, *, session: str | None = None, wait: bool = True,
               timeout: float = 3600.0, progress: ProgressCallback | None = None) -> ImportResult | UploadSession:
        """Upload a file (DICOM or ZIP) or a folder's files, resumably; returns the import's result.

        ``session`` resumes an upload begun earlier (same ``path``). Network failures are retried
        (``retries`` times per request), each time from the offset the server reports.
        With ``wait=False`` returns the queued session instead of waiting for the import.
        """
        files = _collect(Path(path))
        if session is None:
            declared = [{"name": name, "size": p.stat().st_size, "sha256": _sha256(p)} for p, name in files]
            state = self._retrying(lambda: self._request("POST", "uploads/", json={"files": declared, "source": "api"}))
            state = state.json()
        else:
            state = self._retrying(lambda: self._request("GET", f"uploads/{session}/")).json()
            if len(state["files"]) != len(files):
                raise ApiError(409, "this upload session declares other files than the given path holds", "Mismatch")
        session_id = state["id"]
        total = sum(f["size"] for f in state["files"])
        sent = sum(f["received"] for f in state["files"])
        for (local, _name), entry in zip(files, state["files"], strict=True):
            sent += self._send_file(session_id, local, entry, progress, sent, total)
        finalized = self._retrying(lambda: self._request("POST", f"uploads/{session_id}/finalize/")).json()
        if not wait:
            return from_dict(UploadSession, finalized)
        return self.wait(session_id, timeout=timeout, progress=progress)

    def wait(self, session_id: str, timeout: float = 3600.0, interval: float = 0.5,
             progress: ProgressCallback | None = None) -> ImportResult:
        """Poll an upload session until its import finishes; its result, or ApiError if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._retrying(lambda: self._request("GET", f"uploads/{session_id}/", params={"files": "0"})).json()
            job = state["progress"]  # the one progress format of long jobs
            if progress:
                progress("import", job["done"], job["total"])
            if job["status"] == "finished":
                return from_dict(ImportResult, state["result"] | {"import_run": state["import_run"], "session": session_id})
            if job["status"] in ("failed", "cancelled"):
                raise ApiError(200, job["error"] or f"the upload was {job['status']}", job["status"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"the import of upload {session_id} did not finish within {timeout:.0f} s")
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
                try:
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
                        failures += 1
                        offset = self._server_offset(session_id, index)
                        continue
                    raise
                except httpx.TransportError:
                    failures += 1
                    if failures > self.retries:
                        raise
                    time.sleep(self.retry_wait * failures)
                    offset = self._retrying(lambda: self._server_offset(session_id, index))
                if progress:
                    progress("upload", sent + offset - start, total)
        return offset - start

    def _server_offset(self, session_id: str, index: int) -> int:
        state = self._request("GET", f"uploads/{session_id}/").json()
        return state["files"][index]["received"]

    def _retrying(self, call):
        for attempt in range(self.retries + 1):
            try:
                return call()
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(self.retry_wait * (attempt + 1))
        raise AssertionError("unreachable")


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail, code, offset = f"the server answered HTTP {response.status_code}", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or body)
        code = str(body.get("code") or "")
        offset = body.get("offset")
    elif body is not None:
        detail = str(body)
    raise ApiError(response.status_code, detail, code, offset)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


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
