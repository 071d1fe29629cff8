"""Errors as RFC 9457 problem details (``application/problem+json``), for every API endpoint.

``dicomflow.errors`` map to statuses here (one place); DRF's own exceptions (authentication,
validation, not found) get the same shape. Bodies keep ``detail`` and ``code`` (the SDK reads them)
and never carry a stack trace or identifying values.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from dicomflow.errors import (
    ConfirmationRequiredError,
    DicomflowError,
    InputError,
    NotAcceptableError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger(__name__)
PROBLEM_TYPE = "https://dicomflow.invalid/problems/"
TITLES = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          406: "Not acceptable", 409: "Conflict", 413: "Content too large", 415: "Unsupported media type",
          422: "Unprocessable content", 429: "Too many requests", 500: "Internal error", 502: "Bad gateway",
          507: "Insufficient storage"}


def error_status(exc: DicomflowError) -> int:
    from dicomflow.intake import resumable

    if isinstance(exc, PermissionDeniedError):
        return status.HTTP_403_FORBIDDEN
    if isinstance(exc, NotFoundError):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, ConfirmationRequiredError | resumable.UploadOffsetError | resumable.UploadStateError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, UnsupportedMediaTypeError):
        return status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    if isinstance(exc, NotAcceptableError):
        return status.HTTP_406_NOT_ACCEPTABLE
    if isinstance(exc, resumable.UploadSpaceError):
        return status.HTTP_507_INSUFFICIENT_STORAGE
    if isinstance(exc, resumable.UploadLimitError | RequestTooLargeError):
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    if isinstance(exc, resumable.UploadChecksumError):
        return status.HTTP_422_UNPROCESSABLE_ENTITY
    if isinstance(exc, InputError):
        return status.HTTP_400_BAD_REQUEST
    if isinstance(exc, NetworkError):  # a DICOM node (PACS) that cannot be reached or refuses
        return status.HTTP_502_BAD_GATEWAY
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def problem(status_code: int, detail: str, code: str, **extra) -> Response:
    body = {"type": PROBLEM_TYPE + code, "title": TITLES.get(status_code, "Error"), "status": status_code,
            "detail": detail, "code": code, **extra}
    return Response(body, status=status_code, content_type="application/problem+json")


def flatten(detail, prefix: str = "") -> str:
    """``{"files": [{"size": ["..."]}]}`` → ``files[0].size: ...`` (field paths, never values)."""
    if isinstance(detail, dict):
        def path(k) -> str:
            if isinstance(k, int) or str(k).isdigit():
                return f"{prefix}[{k}]"
            return f"{prefix}.{k}" if prefix else str(k)

        return "; ".join(flatten(v, path(k)) for k, v in detail.items())
    if isinstance(detail, list):
        if all(not isinstance(v, dict | list) for v in detail):
            return f"{prefix}: " + " ".join(str(v) for v in detail) if prefix else " ".join(str(v) for v in detail)
        return "; ".join(flatten(v, f"{prefix}[{i}]") for i, v in enumerate(detail) if v)
    return f"{prefix}: {detail}" if prefix else str(detail)


def exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error the API answers, in one shape."""
    if isinstance(exc, DicomflowError):
        from dicomflow.intake import resumable

        code = error_status(exc)
        extra = {"offset": exc.offset} if isinstance(exc, resumable.UploadOffsetError) else {}
        if code >= 500:
            log.error("API error %s", type(exc).__name__)
        response = problem(code, str(exc), type(exc).__name__, **extra)
        if extra:
            response["Upload-Offset"] = str(exc.offset)
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected exception: Django's 500 handler (no details to the client)
    if isinstance(exc, exceptions.ValidationError):
        body = problem(response.status_code, flatten(exc.detail), "ValidationError", errors=exc.detail)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = type(exc).__name__
        body = problem(response.status_code, flatten(detail) if not isinstance(detail, str) else str(detail), code)
    for header, value in response.items():
        if header.lower() in ("www-authenticate", "retry-after", "allow"):
            body[header] = value
    return body
