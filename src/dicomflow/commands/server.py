"""Commands that run the product or administer it: serve, migrate, ensure-admin, manage."""

from __future__ import annotations

import typer

from dicomflow.commands._common import setup_django


def register(app: typer.Typer) -> None:
    app.command("migrate", help="Create or update the database schema.")(migrate)
    app.command("ensure-admin", help="Create the admin account on first run and print how to log in.")(
        ensure_admin
    )
    app.command(
        "manage",
        help="Run a Django management command (e.g. 'dicomflow manage createsuperuser').",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(manage)


def migrate() -> None:
    setup_django(migrate=False)
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=1)


def ensure_admin(
    username: str = typer.Option("admin", help="Login name of the admin account."),
) -> None:
    setup_django()
    from dicomflow.web.services import ensure_admin_account

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
