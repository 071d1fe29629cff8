"""``remote.http``: a remote processing server over HTTP (as DRAW's): upload, poll, download, verify.

Protocol (JSON over HTTPS in production):
- ``POST {url}/tasks`` with the de-identified series as a ZIP body (``application/zip``) and the
  template's ``options`` in the ``X-Dicomflow-Options`` header (JSON) → ``{"id": "..."}``;
- ``GET {url}/tasks/{id}`` → ``{"status": "pending"|"running"|"done"|"failed", "message", "sha256"}``;
- ``GET {url}/tasks/{id}/result`` → a ZIP of DICOM files whose SHA-256 must equal ``sha256``.
The result ZIP is unpacked with the safe extractor (zip-slip, bombs, links refused).

Template parameters: ``url``; ``token_env`` (name of an environment variable holding a bearer token:
secrets never sit in templates); ``options`` (sent as is); ``timeout_seconds`` (3600) for the whole
task, ``poll_seconds`` (2), ``request_timeout`` (60).
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


def run(request: ProcessorRequest) -> list[Path]:
    import httpx

    from django.conf import settings

    from dicomflow.core.archive import extract_archive

    params = request.parameters
    url = str(params.get("url", "")).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ProcessingError(f"{NAME}: parameter 'url' must be an http(s) URL")
    headers = {"X-Dicomflow-Options": json.dumps(params.get("options", {}))}
    if params.get("token_env"):
        token = os.environ.get(str(params["token_env"]))
        if not token:
            raise ConfigurationError(f"{NAME}: environment variable {params['token_env']} (the server's token) is not set")
        headers["Authorization"] = f"Bearer {token}"
    deadline = time.monotonic() + float(params.get("timeout_seconds", 3600))
    poll = float(params.get("poll_seconds", 2))
    upload = _zip_series(request.paths, request.work_dir / "upload.zip")
    try:
        with httpx.Client(timeout=float(params.get("request_timeout", 60)), headers=headers) as client:
            with open(upload, "rb") as body:
                response = client.post(f"{url}/tasks", content=body, headers={"Content-Type": "application/zip"})
            response.raise_for_status()
            task = str(response.json()["id"])
            request.log("INFO", f"{NAME}: uploaded {len(request.paths)} files as task {task}")
            while True:
                status = client.get(f"{url}/tasks/{task}")
                status.raise_for_status()
                state = status.json()
                if state.get("status") == "done":
                    break
                if state.get("status") == "failed":
                    raise ProcessingError(f"{NAME}: the server failed the task: {state.get('message') or 'no reason'}")
                if time.monotonic() > deadline:
                    raise ProcessingError(f"{NAME}: task {task} not done before the timeout")
                time.sleep(poll)
            download = request.work_dir / "result.zip"
            with client.stream("GET", f"{url}/tasks/{task}/result") as stream:
                stream.raise_for_status()
                with open(download, "wb") as fh:
                    for chunk in stream.iter_bytes():
                        fh.write(chunk)
    except httpx.HTTPStatusError as exc:
        raise ProcessingError(f"{NAME}: the server answered HTTP {exc.response.status_code} to "
                              f"{exc.request.method} {exc.request.url.path}") from None
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise ProcessingError(f"{NAME}: cannot talk to {url} ({exc.__class__.__name__})") from None
    expected = str(state.get("sha256", "")).lower()
    actual = _sha256(download)
    if not expected or expected != actual:
        raise ProcessingError(f"{NAME}: the downloaded result does not match its checksum (SHA-256); not used")
    try:
        extracted = extract_archive(download, request.work_dir / "result", settings.ARCHIVE_LIMITS)
    except DicomflowError as exc:
        raise ProcessingError(f"{NAME}: the result archive was refused: {exc}") from None
    written = []
    for item in extracted.files:
        target = request.output_dir / f"{len(written):05d}-{item.path.name}"
        os.replace(item.path, target)
        written.append(target)
    request.log("INFO", f"{NAME}: downloaded {len(written)} result file(s), checksum verified")
    return written
