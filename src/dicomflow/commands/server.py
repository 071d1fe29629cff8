"""Commands that run the product or administer it: serve, migrate, ensure-admin, manage."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from dicomflow.commands._common import fail, setup_django
from dicomflow.core.heartbeat import heartbeat_path, is_stale


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run everything: web UI/API, Celery worker + beat, DICOM receiver.")(serve)
    app.command("web", help="Run only the web UI/API (the web part of serve).")(web)
    app.command("migrate", help="Create or update the database schema.")(migrate)
    app.command("ensure-admin", help="Create the admin account on first run and print how to log in.")(
        ensure_admin
    )
    app.command(
        "manage",
        help="Run a Django management command (e.g. 'dicomflow manage createsuperuser').",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(manage)


def _bin(name: str) -> str:
    """A console script installed beside the running Python (the project's venv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def serve(
    host: str = typer.Option("127.0.0.1", help="Web interface address."),
    port: int = typer.Option(None, help="Web port (default $DICOMFLOW_WEB_PORT or 8000)."),
    scp_port: int = typer.Option(None, help="DICOM receiver port (default $DICOMFLOW_SCP_PORT or 11112)."),
    aet: str = typer.Option(None, help="DICOM receiver AE title (default $DICOMFLOW_SCP_AET or DICOMFLOW)."),
    web_workers: int = typer.Option(
        None, help="Web request threads = 4 x this (default: $DICOMFLOW_WEB_THREADS threads)."),
    worker_concurrency: int = typer.Option(2, help="Celery worker processes."),
    no_scp: bool = typer.Option(False, "--no-scp", help="Do not start the DICOM receiver."),
) -> None:
    """Start web, worker (with beat) and receiver as child processes and keep them running; Ctrl-C
    stops them all.

    A child that exits is started again (at most 5 times in 5 minutes, then everything stops); a
    Celery worker whose heartbeat file ($DICOMFLOW_HOME/run/*.heartbeat) is older than
    $DICOMFLOW_WORKER_HEARTBEAT_TIMEOUT seconds (hung, stopped) is killed and started again. Its
    control files (pid, heartbeats) live in $DICOMFLOW_HOME/run: one serve per home.
    """
    setup_django()
    from django.conf import settings

    port = port or settings.DICOMFLOW_WEB_PORT
    scp_port = scp_port or settings.DICOMFLOW_SCP_PORT
    aet = aet or settings.DICOMFLOW_SCP_AET
    run_dir = settings.RUN_DIR
    pid_file = run_dir / "serve.pid"
    other = _live_pid(pid_file)
    if other and other != os.getpid():
        fail(f"dicomflow serve is already running for {settings.HOME} (process {other}); stop it first")
    pid_file.write_text(f"{os.getpid()}\n")
    env = dict(os.environ, DICOMFLOW_HOME=str(settings.HOME), DJANGO_SETTINGS_MODULE="dicomflow.settings")
    commands: dict[str, list[str]] = {
        "web": [_bin("dicomflow"), "web", "--host", host, "--port", str(port)]
        + (["--threads", str(4 * web_workers)] if web_workers else []),
    }
    heartbeats: dict[str, Path] = {}
    for name, argv, node in _worker_commands(settings, worker_concurrency):
        commands[name] = argv
        heartbeats[name] = heartbeat_path(run_dir, node)
    if not no_scp:
        commands["receiver"] = [_bin("dicomflow"), "scp", "--port", str(scp_port), "--aet", aet]
        for entry in settings.DICOMFLOW_SCP_ALLOW:
            commands["receiver"] += ["--allow", entry]
    children: dict[str, subprocess.Popen] = {}
    started: dict[str, float] = {}
    restarts: dict[str, list[float]] = {name: [] for name in commands}
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    def start(name: str) -> None:
        heartbeat = heartbeats.get(name)
        if heartbeat is not None:
            heartbeat.unlink(missing_ok=True)
        children[name] = subprocess.Popen(commands[name], env=env, start_new_session=True)
        started[name] = time.monotonic()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    timeout = settings.DICOMFLOW_WORKER_HEARTBEAT_TIMEOUT
    failed = None
    try:
        for name in commands:
            start(name)
        typer.echo(
            f"dicomflow is running: web http://{host}:{port}/ (admin at /admin/), "
            + ("" if no_scp else f"DICOM receiver {aet} on port {scp_port}, ")
            + f"data in {settings.HOME}. Press Ctrl-C to stop.",
            err=True,
        )
        while not stopping:
            for name, child in list(children.items()):
                if stopping:
                    break
                why = None
                if child.poll() is not None:
                    why = f"exited with status {child.returncode}"
                elif name in heartbeats and _stale(heartbeats[name], started[name], timeout):
                    why = f"sent no heartbeat for {timeout} s"
                    _kill_group(child)
                if why is None:
                    continue
                now = time.monotonic()
                recent = restarts[name] = [t for t in restarts[name] if now - t < 300] + [now]
                if len(recent) > 5:
                    failed = f"the {name} process {why}, the 6th time in 5 minutes"
                    stopping = True
                    break
                typer.echo(f"dicomflow: the {name} process {why}; starting it again", err=True)
                start(name)
            time.sleep(0.5)
    finally:
        _stop_children(children)
        if _live_pid(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)
    if failed:
        fail(f"{failed}; everything was stopped (see {settings.LOG_DIR})")
    typer.echo("dicomflow stopped.", err=True)


def _worker_commands(settings, concurrency: int):
    """(name, argv, node name) of the Celery workers ``serve`` runs.

    On the filesystem broker (the embedded default) Celery cannot use its asynchronous prefork pool;
    its blocking pool shares one job queue between the pool processes behind a lock, and a pool
    process killed while holding that lock wedges every other one until a restart. There each
    worker is therefore its own process (pool ``solo``), ``concurrency`` of them, each watched and
    restarted on its own. Brokers with an event loop (Redis, RabbitMQ) use one prefork worker, whose
    pool processes have a queue each and are replaced when killed.
    """
    host = socket.gethostname()
    base = [_bin("celery"), "-A", "dicomflow.celery_app", "worker", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip"]
    beat = ["--beat", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME]
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for i in range(max(1, concurrency)):
            node = f"dicomflow{i + 1}.{os.getpid()}@{host}"
            yield (f"worker{i + 1}" if concurrency > 1 else "worker",
                   [*base, "--pool", "solo", "-n", node, *(beat if i == 0 else [])], node)
    else:
        node = f"dicomflow.{os.getpid()}@{host}"
        yield "worker", [*base, "--concurrency", str(concurrency), "-n", node, *beat], node


def _stale(path: Path, started: float, timeout: float) -> bool:
    """No heartbeat for ``timeout`` seconds (a worker still starting gets ``timeout`` plus a minute)."""
    stale = is_stale(path, timeout)
    return time.monotonic() - started > timeout + 60 if stale is None else stale


def _live_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()  # the process's own shutdown stops its children (pool, threads)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def web(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(None, help="Port (default $DICOMFLOW_WEB_PORT or 8000; 0 takes a free one)."),
    threads: int = typer.Option(None, help="Request threads (default $DICOMFLOW_WEB_THREADS)."),
) -> None:
    """Only the web UI/API (the web part of ``serve``): waitress, whose event loop reads each request
    whole before a thread runs it, so slow clients hold no thread; incomplete or idle connections
    are closed after $DICOMFLOW_WEB_READ_TIMEOUT seconds. Access log without query strings."""
    setup_django()
    import logging

    import waitress
    from django.conf import settings

    from dicomflow.core import access_log
    from dicomflow.wsgi import application

    access_log.configure(settings.LOG_DIR / "web-access.log")
    logging.getLogger("waitress").setLevel(logging.WARNING)
    if not logging.getLogger("waitress").handlers:
        logging.getLogger("waitress").addHandler(logging.StreamHandler())
    timeout = settings.DICOMFLOW_WEB_READ_TIMEOUT
    server = waitress.create_server(
        access_log.AccessLog(application),
        host=host, port=settings.DICOMFLOW_WEB_PORT if port is None else port,
        threads=threads or settings.DICOMFLOW_WEB_THREADS,
        channel_timeout=timeout, cleanup_interval=max(1, min(30, timeout // 2)),
        connection_limit=settings.DICOMFLOW_WEB_CONNECTION_LIMIT,
        ident="dicomflow", clear_untrusted_proxy_headers=True, expose_tracebacks=False,
    )
    typer.echo(f"dicomflow web listening on http://{host}:{server.effective_port}/", err=True)
    signal.signal(signal.SIGTERM, lambda *_: server.close() or sys.exit(0))
    try:
        server.run()
    except KeyboardInterrupt:
        pass


def migrate() -> None:
    setup_django(migrate=False)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)


def ensure_admin(
    username: str = typer.Option("admin", help="Login name of the admin account."),
) -> None:
    setup_django()
    from dicomflow.accounts.bootstrap import ensure_admin_account

    password = ensure_admin_account(username)
    if password:
        typer.echo(
            f"Created admin account '{username}'. Password (shown once, also in "
            f"$DICOMFLOW_HOME/keys/initial_admin_password): {password}",
            err=True,
        )
    else:
        typer.echo(
            f"Admin account '{username}' exists. Change its password with "
            f"'dicomflow manage changepassword {username}'.",
            err=True,
        )


def manage(ctx: typer.Context) -> None:
    setup_django(migrate=False)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["dicomflow manage", *ctx.args])
