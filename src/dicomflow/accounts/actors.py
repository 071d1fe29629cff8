"""Who acts: a Django user (web, API, SDK) or the command-line operator.

The operator is the person running ``dicomflow`` on the server: they hold the store and the keys
already, so they may do what a superuser may (but re-identify, which needs a named account with the
Re-identifier role). Their actions are audited under their operating-system login.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Operator:
    """The command-line operator, duck-typed as a user for permission checks and the audit log."""

    login: str
    is_authenticated: bool = True
    is_active: bool = True
    is_superuser: bool = True
    is_staff: bool = True
    is_operator: bool = True
    pk: None = None

    def get_username(self) -> str:
        return f"cli:{self.login}"

    @property
    def username(self) -> str:
        return self.get_username()

    def has_perm(self, perm: str, obj=None) -> bool:
        return True

    def __str__(self) -> str:
        return self.get_username()


def cli_operator() -> Operator:
    """The operator running this process (the OS login; ``USER`` when the login cannot be read)."""
    try:
        login = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        login = os.environ.get("USER", "") or f"uid{os.getuid()}"
    return Operator(login)


def is_operator(actor) -> bool:
    return bool(getattr(actor, "is_operator", False))


def is_active_user(actor) -> bool:
    return bool(actor is not None and getattr(actor, "is_authenticated", False) and actor.is_active)


def actor_name(actor) -> str:
    if actor is None:
        return "system"
    name = getattr(actor, "get_username", None)
    return name() if callable(name) else str(actor)
