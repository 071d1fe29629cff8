"""Reads of export destinations: which DICOM node a name or a destination means."""

from __future__ import annotations

from dicomflow.errors import InputError
from dicomflow.export.models import DicomNode


def enabled_node(name: str) -> DicomNode:
    """The configured, enabled DICOM node called ``name``; an InputError saying what to do otherwise."""
    node = DicomNode.objects.filter(name=name).first()
    if node is None:
        raise InputError(f"no DICOM node named '{name}' is configured; give AET@HOST:PORT or add the node "
                         "(admin: Export → DICOM nodes)")
    if not node.enabled:
        raise InputError(f"DICOM node '{name}' is disabled")
    return node


def destination_node(destination: dict):
    """The node a template's DICOM destination names: ``node`` (a configured name) or
    ``ae_title``/``host``/``port`` (a dict :func:`dicomflow.export.scu.as_remote_node` takes)."""
    if destination.get("node"):
        return enabled_node(destination["node"])
    try:
        return {"ae_title": destination["ae_title"], "host": destination["host"], "port": int(destination["port"])}
    except (KeyError, TypeError, ValueError):
        raise InputError("a DICOM destination needs 'node' or 'ae_title', 'host' and 'port'") from None
