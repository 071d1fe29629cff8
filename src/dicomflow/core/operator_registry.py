"""What the operator allows processors and exports to reach: named commands, HTTP endpoints and
export roots, read from one JSON file that only the machine's operator can edit.

Why: a template is edited in the web app by people who must not be able to run arbitrary programs,
send secrets to arbitrary URLs or write files anywhere. Templates therefore *name* a command, an
endpoint or a DICOM node; what the name means (argv, URL, which token, which folder) lives here.

The file (``DICOMFLOW_PROCESSORS``, default ``$DICOMFLOW_HOME/processors.json``; missing = nothing
allowed)::

    {
      "commands": {
        "nnunet": {"argv": ["/opt/nnunet/run.sh", "{input}", "{output}"],
                   "timeout_seconds": 3600, "nifti": false, "env": {"CUDA_VISIBLE_DEVICES": "0"}}
      },
      "http_endpoints": {
        "draw": {"url": "https://seg.example.org/api", "token_variable": "DICOMFLOW_TOKEN_DRAW",
                 "proxy": null, "verify_tls": true}
      },
      "export_roots": ["/srv/dicomflow-exports"]
    }

Token values never sit in the file: ``token_variable`` names an environment variable, and only
names starting with :data:`TOKEN_PREFIX` are accepted (the Django secret key and other variables
can never be sent anywhere). Pure Python, no Django: ``settings`` passes the path and environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.errors import ConfigurationError

TOKEN_PREFIX = "DICOMFLOW_TOKEN_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True)
class Command:
    name: str
    argv: tuple[str, ...]
    timeout_seconds: float = 3600.0
    nifti: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables, on top of a minimal environment


@dataclass(frozen=True)
class HttpEndpoint:
    name: str
    url: str
    token_variable: str | None = None
    proxy: str | None = None
    verify_tls: bool = True

    def token(self, environ: Mapping[str, str]) -> str | None:
        """The bearer token from the environment (None when the endpoint has none)."""
        if not self.token_variable:
            return None
        value = environ.get(self.token_variable, "").strip()
        if not value:
            raise ConfigurationError(f"HTTP endpoint '{self.name}': environment variable "
                                     f"{self.token_variable} (its token) is not set")
        return value


@dataclass(frozen=True)
class OperatorRegistry:
    commands: Mapping[str, Command] = field(default_factory=dict)
    http_endpoints: Mapping[str, HttpEndpoint] = field(default_factory=dict)
    export_roots: tuple[Path, ...] = ()
    source: str = "(none)"

    def command(self, name: object) -> Command:
        if not isinstance(name, str) or name not in self.commands:
            raise ConfigurationError(f"command {name!r} is not one the operator allows "
                                     f"(allowed: {', '.join(sorted(self.commands)) or 'none'}; see {self.source})")
        return self.commands[name]

    def http_endpoint(self, name: object) -> HttpEndpoint:
        if not isinstance(name, str) or name not in self.http_endpoints:
            raise ConfigurationError(f"HTTP endpoint {name!r} is not one the operator allows "
                                     f"(allowed: {', '.join(sorted(self.http_endpoints)) or 'none'}; see {self.source})")
        return self.http_endpoints[name]

    def export_folder(self, folder: str | Path) -> Path:
        """``folder`` resolved, if it lies inside an allowed export root (symlinks resolved first)."""
        target = Path(folder).expanduser().resolve()
        for root in self.export_roots:
            if target == root or root in target.parents:
                return target
        raise ConfigurationError(f"export folder {str(folder)!r} is outside the allowed export roots "
                                 f"({', '.join(map(str, self.export_roots)) or 'none configured'}; see {self.source})")


def _fail(source: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"{source}: {what}")


def _check_name(source: str, kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(source, f"{kind} name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    return name


def _command(source: str, name: str, spec: object) -> Command:
    if not isinstance(spec, dict):
        raise _fail(source, f"command '{name}' must be an object")
    argv = spec.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise _fail(source, f"command '{name}': 'argv' must be a non-empty list of strings")
    if not Path(argv[0]).is_absolute():
        raise _fail(source, f"command '{name}': the program ({argv[0]!r}) must be an absolute path")
    env = spec.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str)
                                            for k, v in env.items()):
        raise _fail(source, f"command '{name}': 'env' must map variable names to strings")
    try:
        timeout = float(spec.get("timeout_seconds", 3600))
    except (TypeError, ValueError):
        timeout = -1.0
    if not 0 < timeout <= 7 * 24 * 3600:
        raise _fail(source, f"command '{name}': 'timeout_seconds' must be a number of seconds up to a week")
    return Command(name=name, argv=tuple(argv), timeout_seconds=timeout, nifti=bool(spec.get("nifti", False)),
                   env=dict(env))


def _endpoint(source: str, name: str, spec: object) -> HttpEndpoint:
    if not isinstance(spec, dict):
        raise _fail(source, f"HTTP endpoint '{name}' must be an object")
    url = spec.get("url")
    if not isinstance(url, str) or not re.match(r"https?://[^\s/]+", url):
        raise _fail(source, f"HTTP endpoint '{name}': 'url' must be an http(s) URL")
    token_variable = spec.get("token_variable")
    if token_variable is not None and (not isinstance(token_variable, str) or not token_variable.startswith(TOKEN_PREFIX)
                                       or not _ENV_NAME.fullmatch(token_variable)):
        raise _fail(source, f"HTTP endpoint '{name}': 'token_variable' must be an environment variable "
                            f"name starting with {TOKEN_PREFIX}")
    proxy = spec.get("proxy")
    if proxy is not None and (not isinstance(proxy, str) or not re.match(r"(https?|socks5)://", proxy)):
        raise _fail(source, f"HTTP endpoint '{name}': 'proxy' must be an http(s):// or socks5:// URL")
    return HttpEndpoint(name=name, url=url.rstrip("/"), token_variable=token_variable, proxy=proxy,
                        verify_tls=bool(spec.get("verify_tls", True)))


def parse_registry(data: object, source: str = "(registry)") -> OperatorRegistry:
    if not isinstance(data, dict):
        raise _fail(source, "must hold a JSON object")
    unknown = set(data) - {"commands", "http_endpoints", "export_roots"}
    if unknown:
        raise _fail(source, f"unknown section(s) {', '.join(sorted(unknown))}")
    commands = data.get("commands") or {}
    endpoints = data.get("http_endpoints") or {}
    roots = data.get("export_roots") or []
    if not isinstance(commands, dict) or not isinstance(endpoints, dict) or not isinstance(roots, list):
        raise _fail(source, "'commands' and 'http_endpoints' must be objects, 'export_roots' a list")
    export_roots = []
    for root in roots:
        if not isinstance(root, str) or not Path(root).is_absolute():
            raise _fail(source, f"export root {root!r} must be an absolute path")
        export_roots.append(Path(root).resolve())
    return OperatorRegistry(
        commands={_check_name(source, "command", n): _command(source, n, s) for n, s in commands.items()},
        http_endpoints={_check_name(source, "HTTP endpoint", n): _endpoint(source, n, s) for n, s in endpoints.items()},
        export_roots=tuple(export_roots), source=source)


def load_registry(path: Path) -> OperatorRegistry:
    """The registry in ``path``; an empty one (nothing allowed) when the file does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return OperatorRegistry(source=str(path))
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_registry(data, str(path))
