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


def destination_node(destination: dict) -> DicomNode:
    """The node a template's DICOM destination (or a ``remote.dicom_node`` template) names: ``node``, a
    DICOM node configured by a superuser. Templates never give an AE title, host and port themselves
    (they are edited by people who must not reach arbitrary hosts); the command line's operator can
    (``dicomflow export ... --to AET@HOST:PORT``)."""
    if any(k in destination for k in ("ae_title", "host", "port")):
        raise InputError("a DICOM destination names a configured node ('node'), never an AE title, host or port")
    if not destination.get("node"):
        raise InputError("a DICOM destination needs 'node' (a configured DICOM node)")
    return enabled_node(destination["node"])
