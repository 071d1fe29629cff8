"""The dicomflow WSGI application, wrapped for the catalog benchmark (gunicorn ``_bench_wsgi:application``).

Every response carries ``X-Query-Count`` (SQL statements the request ran: session, user, the view's
reads) and ``X-Slowest-Query-Ms``. A request with ``X-Bench-Explain: <name>`` also writes
``EXPLAIN (ANALYZE, BUFFERS)`` of its slowest statement to ``$BENCH_EXPLAIN_DIR/<name>.txt``.
Benchmark plumbing only: the product's own WSGI application is unchanged.
"""

from __future__ import annotations

import os
import re
import time

from django.db import connection

from dicomflow.wsgi import application as _django

EXPLAIN_DIR = os.environ.get("BENCH_EXPLAIN_DIR", "")


def application(environ, start_response):
    stats = {"count": 0, "slowest": 0.0, "sql": "", "params": None}

    def counter(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed = time.perf_counter() - started
            stats["count"] += 1
            if elapsed > stats["slowest"]:
                stats.update(slowest=elapsed, sql=sql, params=params)

    def start(status, headers, exc_info=None):
        headers = list(headers) + [("X-Query-Count", str(stats["count"])),
                                   ("X-Slowest-Query-Ms", f"{stats['slowest'] * 1000:.2f}")]
        return start_response(status, headers, exc_info)

    with connection.execute_wrapper(counter):
        body = _django(environ, start)
        body = list(body)  # render inside the wrapper (streaming bodies run their queries here)
    explain = environ.get("HTTP_X_BENCH_EXPLAIN", "")
    if EXPLAIN_DIR and explain and stats["sql"]:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", explain)[:80]
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + stats["sql"], stats["params"])
            plan = "\n".join(row[0] for row in cursor.fetchall())
        with open(os.path.join(EXPLAIN_DIR, f"{name}.txt"), "w") as f:
            f.write(f"-- {stats['slowest'] * 1000:.1f} ms\n{stats['sql']}\n-- params: {stats['params']!r}\n\n{plan}\n")
        connection.close()
    return body
