"""The operator's registry (:mod:`dicomflow.core.operator_registry`) as this installation has it, and
the check every stored template passes against it.

Read from ``settings.DICOMFLOW_PROCESSORS`` each time it is asked for (the file is small; an
operator's edit applies to the next job without a restart, and tests point the setting elsewhere).

A template (edited in the admin, the desk pages or the API by people who must not run programs or
reach arbitrary hosts) only *names* what the operator configured: a command of the registry, an
HTTP endpoint of the registry, a DICOM node (``export.DicomNode``, superusers only) and folders
inside the registry's export roots. :func:`template_reach_problems` says what a definition reaches
beyond that; :meth:`dicomflow.processing.models.Template.clean` refuses such a definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from dicomflow.core.operator_registry import OperatorRegistry, load_registry
from dicomflow.errors import ConfigurationError, InputError

EXTERNAL_COMMAND = "external.command"
REMOTE_HTTP = "remote.http"
REMOTE_DICOM_NODE = "remote.dicom_node"

#: What the data migration ``processing.0004_h1_unregistered_commands`` puts in place of an argv list: a
#: value no registry name can take, so such a template fails with a clear message until it is fixed.
UNREGISTERED_COMMAND = "(unregistered)"
UNREGISTERED_MESSAGE = ("this template runs a command the operator has not registered; ask the operator to add it "
                        "to processors.json (DICOMFLOW_PROCESSORS) and name it in the template's 'command'")

#: Parameters a template may never carry, per processor: what to run, with which environment, where to.
FORBIDDEN_PARAMETERS = {
    EXTERNAL_COMMAND: {"argv": "the program and its arguments come from the operator's registry",
                       "env": "a command's environment comes from the operator's registry",
                       "cwd": "a command runs in its job's folder"},
    REMOTE_HTTP: {"url": "name an 'endpoint' of the operator's registry instead",
                  "token_env": "tokens come from the endpoint's DICOMFLOW_TOKEN_* variable in the registry",
                  "token": "tokens come from the endpoint's DICOMFLOW_TOKEN_* variable in the registry",
                  "headers": "the endpoint's headers come from the operator's registry",
                  "proxy": "the endpoint's proxy comes from the operator's registry"},
    REMOTE_DICOM_NODE: {"ae_title": "name a configured DICOM 'node' instead",
                        "host": "name a configured DICOM 'node' instead",
                        "port": "name a configured DICOM 'node' instead"},
}


def operator_registry() -> OperatorRegistry:
    return load_registry(settings.DICOMFLOW_PROCESSORS)


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none configured"


def _node_names() -> set[str]:
    from dicomflow.export.models import DicomNode

    return set(DicomNode.objects.values_list("name", flat=True))


def destination_problems(destination: object, registry: OperatorRegistry, nodes: set[str], where: str) -> list[str]:
    """What a template destination (and its ``fallback``) reaches that the operator did not configure."""
    if not isinstance(destination, dict):
        return [f"{where}: a destination must be a JSON object"]
    problems = []
    kind = destination.get("type", "folder")
    if kind == "folder":
        path = destination.get("path")
        if not isinstance(path, str) or not path.strip():
            problems.append(f"{where}: a folder destination needs a 'path'")
        elif not Path(path).is_absolute():
            problems.append(f"{where}: folder {path!r} must be an absolute path inside an export root")
        else:
            try:
                registry.export_folder(path)
            except ConfigurationError as exc:
                problems.append(f"{where}: {exc}")
    elif kind == "dicom":
        direct = [k for k in ("ae_title", "host", "port") if k in destination]
        if direct:
            problems.append(f"{where}: a DICOM destination names a configured node ('node'), not "
                            f"{'/'.join(direct)}")
        node = destination.get("node")
        if not node:
            problems.append(f"{where}: a DICOM destination needs 'node' (a configured DICOM node)")
        elif node not in nodes:
            problems.append(f"{where}: no DICOM node named {str(node)[:64]!r} is configured (known: {_known(nodes)})")
    else:
        problems.append(f"{where}: unknown destination type {str(kind)[:40]!r} (use 'folder' or 'dicom')")
    if destination.get("fallback") is not None:
        problems += destination_problems(destination["fallback"], registry, nodes, f"{where} fallback")
    return problems


def template_reach_problems(definition: dict, registry: OperatorRegistry | None = None) -> list[str]:
    """Why ``definition`` (a template dict) reaches beyond what the operator configured; [] when it does not."""
    registry = registry if registry is not None else operator_registry()
    processor = definition.get("processor")
    params = definition.get("parameters") or {}
    problems = []
    if not isinstance(params, dict):
        return ["parameters must be a JSON object"]
    for key, why in FORBIDDEN_PARAMETERS.get(processor, {}).items():
        if key in params:
            problems.append(f"parameter '{key}' is not allowed in a {processor} template: {why}")
    nodes: set[str] | None = None
    if processor == EXTERNAL_COMMAND:
        command = params.get("command")
        if isinstance(command, list):
            problems.append("parameter 'command' must name a command the operator registered (an argv list is "
                            f"not allowed; registered: {_known(registry.commands)})")
        elif command not in registry.commands:
            problems.append(f"parameter 'command': {str(command)[:64]!r} is not a command the operator registered "
                            f"(registered: {_known(registry.commands)}; see {registry.source})")
    elif processor == REMOTE_HTTP:
        endpoint = params.get("endpoint")
        if endpoint not in registry.http_endpoints:
            problems.append(f"parameter 'endpoint': {str(endpoint)[:64]!r} is not an HTTP endpoint the operator "
                            f"registered (registered: {_known(registry.http_endpoints)}; see {registry.source})")
    elif processor == REMOTE_DICOM_NODE:
        nodes = _node_names()
        node = params.get("node")
        if node not in nodes:
            problems.append(f"parameter 'node': {str(node)[:64]!r} is not a configured DICOM node "
                            f"(known: {_known(nodes)})")
    destinations = definition.get("destinations") or []
    if destinations:
        nodes = nodes if nodes is not None else _node_names()
        for i, destination in enumerate(destinations if isinstance(destinations, list) else [destinations]):
            problems += destination_problems(destination, registry, nodes, f"destination {i + 1}")
    return problems


def require_export_folder(folder: str | Path) -> Path:
    """``folder`` resolved inside an export root of the registry; InputError saying where it may go."""
    try:
        return operator_registry().export_folder(folder)
    except ConfigurationError as exc:
        raise InputError(str(exc)) from None
