"""RT reference graph (RTDOSE → RTPLAN → RTSTRUCT → images), approval status, selection closure.

Input is one :class:`InstanceRef` per instance — from a header (:func:`instance_from_dataset`) or
from catalog rows — so the same graph serves folders and the catalog.
"""

from dicomflow.core.rt.graph import Edge, RTGraph, SeriesNode
from dicomflow.core.rt.model import ApprovalStatus, InstanceRef, Reference, RefKind, instance_from_dataset
from dicomflow.core.rt.scan import ScanResult, read_header, scan


def _extract_instance(ds, path):  # module level: sent to worker processes
    return instance_from_dataset(ds, path)


def graph_from_path(path, workers: int | None = None) -> tuple[RTGraph, ScanResult]:
    """Build the RT graph of every DICOM file below ``path`` (headers only)."""
    result = scan(path, _extract_instance, workers)
    return RTGraph.from_instances(result.records), result


__all__ = [
    "ApprovalStatus",
    "Edge",
    "InstanceRef",
    "RTGraph",
    "Reference",
    "RefKind",
    "ScanResult",
    "SeriesNode",
    "graph_from_path",
    "instance_from_dataset",
    "read_header",
    "scan",
]
