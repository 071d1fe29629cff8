"""Commands that run the product or administer it: serve, migrate, ensure-admin, manage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer

from dicomflow.commands._common import fail, setup_django


def register(app: typer.Typer) -> None:
    app.command("serve", help="Run everything: web UI/API, Celery worker + beat, DICOM receiver.")(serve)
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
    web_workers: int = typer.Option(2, help="gunicorn worker processes."),
    worker_concurrency: int = typer.Option(2, help="Celery worker processes."),
    no_scp: bool = typer.Option(False, "--no-scp", help="Do not start the DICOM receiver."),
) -> None:
    """Start web, worker (with beat) and receiver as child processes; Ctrl-C stops them all."""
    setup_django()
    from django.conf import settings

    port = port or settings.DICOMFLOW_WEB_PORT
    scp_port = scp_port or settings.DICOMFLOW_SCP_PORT
    aet = aet or settings.DICOMFLOW_SCP_AET
    env = dict(os.environ, DICOMFLOW_HOME=str(settings.HOME), DJANGO_SETTINGS_MODULE="dicomflow.settings")
    commands = {
        "web": [
            _bin("gunicorn"), "dicomflow.wsgi:application", "--bind", f"{host}:{port}",
            "--workers", str(web_workers), "--threads", "4", "--timeout", "300",
            "--access-logfile", str(settings.LOG_DIR / "web-access.log"),
        ],
        "worker": [
            _bin("celery"), "-A", "dicomflow.celery_app", "worker", "--beat", "--loglevel", "INFO",
            "--concurrency", str(worker_concurrency), "--without-mingle", "--without-gossip",
            "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
        ],
    }
    if not no_scp:
        commands["receiver"] = [_bin("dicomflow"), "scp", "--port", str(scp_port), "--aet", aet]
        for entry in settings.DICOMFLOW_SCP_ALLOW:
            commands["receiver"] += ["--allow", entry]
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, argv in commands.items():
            children[name] = subprocess.Popen(argv, env=env, start_new_session=True)
        typer.echo(
            f"dicomflow is running: web http://{host}:{port}/ (admin at /admin/), "
            + ("" if no_scp else f"DICOM receiver {aet} on port {scp_port}, ")
            + f"data in {settings.HOME}. Press Ctrl-C to stop.",
            err=True,
        )
        failed = None
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    failed = f"the {name} process exited with status {child.returncode}"
                    stopping = True
            time.sleep(0.5)
    finally:
        _stop_children(children)
    if failed:
        fail(f"{failed}; everything was stopped (see {settings.LOG_DIR})")
    typer.echo("dicomflow stopped.", err=True)


def _stop_children(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()  # the process's own shutdown stops its children (pool, gunicorn workers)
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


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
