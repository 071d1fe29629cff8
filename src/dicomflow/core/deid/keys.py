"""Per-project secret keys and reverse maps, kept in a file store outside the database.

Layout under ``$DICOMFLOW_HOME/keys/projects/``: ``<project>.key`` (32 random bytes, hex, mode 600,
created on first use), ``<project>.options.json`` (the project's profile options) and
``<project>.reverse.jsonl`` (re-identification records, mode 600). Secrets are never logged: the
``ProjectKey`` repr hides them. The Django side keeps its project rows in the database and calls
this store for the secret.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.core.deid.options import DEFAULT_OPTIONS, Options
from dicomflow.errors import ConfigurationError, InputError

_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY_BYTES = 32


@dataclass(frozen=True)
class ProjectKey:
    """A project's name and secret; picklable so worker processes receive it."""

    project: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ConfigurationError(f"the key of project '{self.project}' is too short")


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 600 atomically; fails if it exists (first writer wins)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, refuses to overwrite a concurrent creator's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


class KeyStore:
    """File key store: one folder, one key file per project."""

    def __init__(self, directory: Path | str) -> None:
        """``directory``: where the keys live (the product passes ``settings.PROJECT_KEYS_DIR``)."""
        self.directory = Path(directory)

    def _path(self, project: str, suffix: str) -> Path:
        if not _PROJECT.match(project or ""):
            raise InputError(
                "project key must be 1-64 characters A-Z, a-z, 0-9, '_', '.', '-' "
                "and start with a letter or digit"
            )
        return self.directory / f"{project}{suffix}"

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def exists(self, project: str) -> bool:
        return self._path(project, ".key").exists()

    def project_key(self, project: str, create: bool = True) -> ProjectKey:
        """The project's key, generated (32 random bytes) on first use when ``create``."""
        path = self._path(project, ".key")
        if not path.exists():
            if not create:
                raise InputError(f"project '{project}' has no key in {self.directory}")
            self._ensure_dir()
            _write_private(path, secrets.token_bytes(KEY_BYTES).hex().encode("ascii") + b"\n")
        if path.stat().st_mode & 0o077:
            raise ConfigurationError(f"key file {path} is readable by others; run 'chmod 600 {path}'")
        try:
            secret = bytes.fromhex(path.read_text("ascii").strip())
        except ValueError as exc:
            raise ConfigurationError(f"key file {path} is damaged (not hex)") from exc
        return ProjectKey(project, secret)

    def options(self, project: str) -> Options:
        """The project's stored options; defaults (saved) for a new project."""
        path = self._path(project, ".options.json")
        if not path.exists():
            self.save_options(project, DEFAULT_OPTIONS)
            return DEFAULT_OPTIONS
        return Options.from_dict(json.loads(path.read_text("utf-8")))

    def save_options(self, project: str, options: Options) -> None:
        path = self._path(project, ".options.json")
        self._ensure_dir()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(options.to_dict(), indent=2), "utf-8")
        tmp.replace(path)

    def reverse_map_path(self, project: str) -> Path:
        return self._path(project, ".reverse.jsonl")

    def load_reverse_records(self, project: str) -> list[dict]:
        path = self.reverse_map_path(project)
        if not path.exists():
            return []
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def append_reverse_records(self, project: str, records: Iterable[dict]) -> int:
        """Append records not stored yet (deduplicated); returns how many were added."""
        path = self.reverse_map_path(project)
        self._ensure_dir()
        seen = {json.dumps(r, sort_keys=True) for r in self.load_reverse_records(project)}
        lines = []
        for record in records:
            text = json.dumps(record, sort_keys=True)
            if text not in seen:
                seen.add(text)
                lines.append(text + "\n")
        if lines:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.writelines(lines)
        return len(lines)
