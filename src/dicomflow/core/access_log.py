"""The web access log: one line per request, WITHOUT the query string.

Query strings carry what people search for (patient IDs, names); the log records the path only,
the method, status, size and duration. Written by the web server (``dicomflow web``) to
``$DICOMFLOW_HOME/logs/web-access.log`` (mode 600 like every product file).
"""

from __future__ import annotations

import logging
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

log = logging.getLogger("dicomflow.web.access")


def configure(path: Path) -> None:
    """Send the access log to ``path`` (rotated at 10 MB, 5 kept), and nowhere else."""
    handler = RotatingFileHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class AccessLog:
    """WSGI middleware writing ``ADDR - - [TIME] "METHOD PATH PROTOCOL" STATUS BYTES SECONDS``."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        line = _Line(environ)

        def record_status(status, headers, exc_info=None):
            line.status = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            body = self.app(environ, record_status)
        except BaseException:
            line.write()
            raise
        return _Body(body, line)


class _Line:
    def __init__(self, environ):
        self.environ, self.started, self.status, self.size = environ, time.monotonic(), "-", 0

    def write(self) -> None:
        environ = self.environ
        # PATH_INFO only, never QUERY_STRING (see the module's docstring); control characters are
        # escaped so a crafted path cannot forge log lines
        path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode(
            "unicode_escape", "replace").decode("ascii", "replace").replace('"', "%22")
        log.info('%s - - [%s] "%s %s %s" %s %d %.3f', environ.get("REMOTE_ADDR", "-"),
                 time.strftime("%d/%b/%Y:%H:%M:%S %z"), str(environ.get("REQUEST_METHOD", "-"))[:16], path,
                 str(environ.get("SERVER_PROTOCOL", "-"))[:16], self.status, self.size,
                 time.monotonic() - self.started)


class _Body:
    """The response body, counted; the line is written when the server closes it (WSGI close())."""

    def __init__(self, body, line: _Line):
        self.body, self.line = body, line

    def __iter__(self):
        for chunk in self.body:
            self.line.size += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.line.write()
