"""The SDK's errors: one base (:class:`SdkError`) for everything the SDK raises on purpose.

Messages never carry identifying values: they name uploads and jobs by their ids, never by
patient names or clinical UIDs. Network failures that outlast the retries are httpx's own
``httpx.TransportError`` subclasses (``ConnectError``, ``ReadTimeout``, ...).
"""

from __future__ import annotations


class SdkError(Exception):
    """Base of the SDK's own errors."""


class ApiError(SdkError):
    """The server refused a request. ``status`` (HTTP), ``message``/``detail`` (the server's
    explanation), ``code`` (its machine-readable code), ``title`` and, for uploads, ``offset``
    (where the server wants the next chunk) come from the RFC 9457 problem details."""

    def __init__(self, status: int, message: str, code: str = "", offset: int | None = None, title: str = ""):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status
        self.message = message
        self.code = code
        self.offset = offset
        self.title = title

    @property
    def detail(self) -> str:
        return self.message


class UploadFailed(ApiError):
    """The upload's import failed or the upload was cancelled; ``code`` is its status."""


class UnsupportedByServer(SdkError):
    """The server is older than this SDK and would silently ignore what was asked."""


class WaitTimeout(SdkError, TimeoutError):
    """A wait (import, job results) did not end in time; the work may still finish later."""


class JobError(SdkError):
    """A processing job ended without results; ``job`` is its last state (a ``Job``)."""

    def __init__(self, job, message: str):
        super().__init__(message)
        self.job = job


class JobFailed(JobError):
    """The job failed; ``job.error`` says why (retry it with ``Client.retry``)."""


class JobCancelled(JobError):
    """The job was cancelled."""


class UnsafeArchive(SdkError):
    """A downloaded ZIP holds a member that could write outside its folder (absolute path, ``..``,
    a link): nothing of it was written."""
