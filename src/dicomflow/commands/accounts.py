"""Account commands: ``dicomflow user create`` and ``dicomflow apikey create|list|revoke``.

They run as the command-line operator (``accounts.actors.cli_operator``) and are audited under
``cli:<OS login>``. Passwords are read from a file (or stdin), never from the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dicomflow.commands._common import JSON_OPTION, emit, fail, setup_django

user_app = typer.Typer(help="Users of the web UI and the API.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys (X-Api-Key): shown once, stored hashed, revocable.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(apikey_app, name="apikey")


def _read_password(path: Path | None, as_json: bool) -> str | None:
    if path is None:
        return None
    import sys

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        fail(f"cannot read the password file {path}: {exc.strerror}", as_json)
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        fail(f"the password file {path} is empty", as_json)
    return password


@user_app.command("create", help="Create a user (no staff rights); without a password it can use API keys only.")
def create_user(
    name: str = typer.Argument(..., help="User name."),
    email: str = typer.Option("", "--email", help="E-mail address."),
    password_file: Path = typer.Option(None, "--password-file",
                                       help="File whose first line is the password ('-' reads stdin)."),
    clinical_pool: bool = typer.Option(False, "--clinical-pool",
                                       help="May see the clinical pool (Study0) and stage from it."),
    as_json: bool = JSON_OPTION,
) -> None:
    password = _read_password(password_file, as_json)
    setup_django()
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    from dicomflow.accounts.actors import cli_operator
    from dicomflow.accounts.services import create_user as create
    from dicomflow.errors import DicomflowError

    if password is not None:
        try:
            validate_password(password)
        except ValidationError as exc:
            fail("the password is too weak: " + " ".join(exc.messages), as_json)
    try:
        user = create(cli_operator(), name, email=email, password=password, clinical_pool=clinical_pool)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = {"id": user.pk, "username": user.username, "email": user.email, "clinical_pool": clinical_pool,
           "password": password is not None}
    emit(doc, as_json, f"user {user.username} created" + ("" if password else " (API keys only: no password)"))


@apikey_app.command("create", help="Create an API key for a user; the key is printed once.")
def create_key(
    user: str = typer.Argument(..., help="User name."),
    name: str = typer.Option("", "--name", help="What the key is for."),
    expires_in_days: int = typer.Option(None, "--expires-in-days", help="Days until the key stops working."),
    as_json: bool = JSON_OPTION,
) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.accounts.services import create_api_key, get_user
    from dicomflow.errors import DicomflowError

    try:
        row, key = create_api_key(cli_operator(), get_user(user), name=name, expires_in_days=expires_in_days)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    doc = {"key": key, "prefix": row.prefix, "user": user,
           "expires": row.expiry_date.isoformat() if row.expiry_date else None}
    emit(doc, as_json, key)


@apikey_app.command("list", help="A user's API keys (prefixes only; keys are never shown again).")
def list_keys(user: str = typer.Argument(..., help="User name."), as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.accounts.selectors import api_keys_of
    from dicomflow.accounts.services import get_user
    from dicomflow.errors import DicomflowError

    try:
        rows = api_keys_of(get_user(user))
    except DicomflowError as exc:
        fail(str(exc), as_json)
    keys = [
        {"prefix": r.prefix, "name": r.name, "created": r.created.isoformat(),
         "expires": r.expiry_date.isoformat() if r.expiry_date else None, "revoked": r.revoked,
         "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None}
        for r in rows
    ]
    human = "\n".join(f"{k['prefix']}\t{k['name']}\t{'revoked' if k['revoked'] else 'active'}\t{k['expires'] or 'no expiry'}"
                      for k in keys)
    emit({"user": user, "keys": keys}, as_json, human or "no API keys")


@apikey_app.command("revoke", help="Revoke an API key by its prefix.")
def revoke_key(prefix: str = typer.Argument(..., help="The key's prefix (see 'apikey list')."),
               as_json: bool = JSON_OPTION) -> None:
    setup_django()
    from dicomflow.accounts.actors import cli_operator
    from dicomflow.accounts.services import revoke_api_key
    from dicomflow.errors import DicomflowError

    try:
        row = revoke_api_key(cli_operator(), prefix)
    except DicomflowError as exc:
        fail(str(exc), as_json)
    emit({"prefix": row.prefix, "revoked": row.revoked}, as_json, f"API key {row.prefix} revoked")
