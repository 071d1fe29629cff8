"""The series-level RT reference graph: edges, approval, missing references, selection closure.

Edges point from the referring series to the referenced one (RTDOSE → RTPLAN → RTSTRUCT → CT), so
the closure of a series (all it references, transitively) is what must travel with it. Instance
references are mapped to their series through the instances present; a reference that cannot be
resolved is recorded as missing (the series UID when known, else the instance UID), never fatal.
Frames of reference are a fallback: a structure set naming no series, a plan naming no structure
set, a dose naming no plan, and registrations link to the image series sharing the frame.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from dicomflow.core.rt.model import (
    APPROVAL_RANK,
    NON_VOLUME_MODALITIES,
    ApprovalStatus,
    InstanceRef,
    RefKind,
)


@dataclass(frozen=True)
class Edge:
    source: str  # referring series UID
    target: str  # referenced series UID
    via: RefKind  # the kind of reference that produced it


@dataclass
class SeriesNode:
    """One series as the graph sees it; approval is the least trusted status among its instances."""

    uid: str
    modality: str
    study_uid: str
    frame_of_reference_uids: set[str] = field(default_factory=set)
    sop_instance_uids: set[str] = field(default_factory=set)
    approval_status: ApprovalStatus | None = None
    review_date: str | None = None
    review_time: str | None = None
    reviewer_name: str | None = None
    references: set[str] = field(default_factory=set)
    missing_references: set[str] = field(default_factory=set)
    missing_frames_of_reference: set[str] = field(default_factory=set)

    @property
    def is_volume(self) -> bool:
        """An image series that lives in a frame of reference (CT, MR, PT...), not an RT object."""
        return self.modality not in NON_VOLUME_MODALITIES


# Which reference kinds a modality follows, and whether frames of reference are only a fallback.
_STRUCTURAL = {RefKind.SERIES, RefKind.IMAGE, RefKind.STRUCTURE_SET, RefKind.PLAN, RefKind.INSTANCE}
_FALLBACK_WHEN_NONE_OF = {
    "RTSTRUCT": {RefKind.SERIES, RefKind.IMAGE},
    "RTPLAN": {RefKind.STRUCTURE_SET},
    "RTDOSE": {RefKind.PLAN, RefKind.STRUCTURE_SET},
}


class RTGraph:
    """Build with :meth:`from_instances`; query with :meth:`closure`, :meth:`edges`, :meth:`tree`."""

    def __init__(self) -> None:
        self.series: dict[str, SeriesNode] = {}
        self._edges: set[Edge] = set()
        self._instance_series: dict[str, str] = {}

    @classmethod
    def from_instances(cls, instances: Iterable[InstanceRef]) -> "RTGraph":
        graph = cls()
        instances = list(instances)
        for inst in instances:
            graph._add_node(inst)
        for inst in instances:
            graph._resolve(inst)
        return graph

    def _add_node(self, inst: InstanceRef) -> None:
        node = self.series.get(inst.series_instance_uid)
        if node is None:
            node = SeriesNode(inst.series_instance_uid, inst.modality, inst.study_instance_uid)
            self.series[node.uid] = node
        node.sop_instance_uids.add(inst.sop_instance_uid)
        self._instance_series[inst.sop_instance_uid] = node.uid
        if inst.frame_of_reference_uid:
            node.frame_of_reference_uids.add(inst.frame_of_reference_uid)
        if inst.modality == "RTSTRUCT":
            node.frame_of_reference_uids.update(r.uid for r in inst.refs(RefKind.FRAME_OF_REFERENCE))
        if inst.approval_status is not None and (
            node.approval_status is None
            or APPROVAL_RANK[inst.approval_status] < APPROVAL_RANK[node.approval_status]
        ):
            node.approval_status = inst.approval_status
            node.review_date, node.review_time = inst.review_date, inst.review_time
            node.reviewer_name = inst.reviewer_name

    def _link(self, source: str, target: str, via: RefKind) -> None:
        if source != target:
            self._edges.add(Edge(source, target, via))
            self.series[source].references.add(target)

    def _resolve(self, inst: InstanceRef) -> None:
        node = self.series[inst.series_instance_uid]
        kinds_present = {r.kind for r in inst.references}
        for ref in inst.references:
            if ref.kind not in _STRUCTURAL:
                continue
            if ref.kind == RefKind.SERIES:
                target = ref.uid if ref.uid in self.series else None
                missing = ref.uid
            else:
                target = self._instance_series.get(ref.uid)
                if target is None and ref.series_uid in self.series:
                    target = ref.series_uid  # series present, that instance absent: QC reports it
                missing = ref.series_uid or ref.uid
            if target is not None:
                self._link(node.uid, target, ref.kind)
            else:
                node.missing_references.add(missing)
        fallback_blockers = _FALLBACK_WHEN_NONE_OF.get(inst.modality)
        use_frames = inst.modality == "REG" or (
            fallback_blockers is not None and not (kinds_present & fallback_blockers)
        )
        if use_frames:
            for ref in inst.refs(RefKind.FRAME_OF_REFERENCE):
                targets = [
                    s.uid
                    for s in self.series.values()
                    if s.is_volume and ref.uid in s.frame_of_reference_uids and s.uid != node.uid
                ]
                for target in targets:
                    self._link(node.uid, target, RefKind.FRAME_OF_REFERENCE)
                if not targets and inst.modality != "REG":
                    node.missing_frames_of_reference.add(ref.uid)
        # An image series counted as missing through its series UID is not missing once linked.
        node.missing_references -= node.references

    # -- queries -------------------------------------------------------------------------------

    def edges(self) -> list[Edge]:
        return sorted(self._edges, key=lambda e: (e.source, e.target, e.via.value))

    def referrers(self, uid: str) -> list[str]:
        return sorted({e.source for e in self._edges if e.target == uid})

    def series_of_instance(self, sop_instance_uid: str) -> str | None:
        return self._instance_series.get(sop_instance_uid)

    def orphans(self) -> list[str]:
        """Series linked to nothing present: they neither reference nor are referenced."""
        linked = {e.source for e in self._edges} | {e.target for e in self._edges}
        return sorted(uid for uid in self.series if uid not in linked)

    def closure(self, *uids: str) -> list[str]:
        """The given series and everything they reference, transitively (present series only).

        Unknown UIDs raise ``InputError`` so a typo is not mistaken for an empty selection.
        """
        from dicomflow.errors import InputError

        unknown = [u for u in uids if u not in self.series]
        if unknown:
            raise InputError(f"{len(unknown)} requested series UID(s) are not present in the input")
        outgoing: dict[str, set[str]] = defaultdict(set)
        for edge in self._edges:
            outgoing[edge.source].add(edge.target)
        seen: dict[str, None] = {}  # insertion-ordered set: requested series first
        stack = list(reversed(uids))
        while stack:
            uid = stack.pop()
            if uid in seen:
                continue
            seen[uid] = None
            stack.extend(sorted(outgoing[uid] - seen.keys(), reverse=True))
        return list(seen)

    def tree(self) -> dict:
        """The ``dicomflow rt tree --json`` document (see ARCHITECTURE.md)."""
        order = {"CT": 0, "MR": 0, "PT": 0, "RTSTRUCT": 1, "RTPLAN": 2, "RTDOSE": 3, "RTIMAGE": 3}
        nodes = sorted(self.series.values(), key=lambda n: (n.study_uid, order.get(n.modality, 0), n.uid))
        return {
            "series": [
                {
                    "uid": n.uid,
                    "modality": n.modality,
                    "references": sorted(n.references),
                    "missing_references": sorted(n.missing_references),
                    "approval_status": n.approval_status.value if n.approval_status else None,
                    "study_uid": n.study_uid,
                    "instances": len(n.sop_instance_uids),
                    "referenced_by": self.referrers(n.uid),
                    "missing_frames_of_reference": sorted(n.missing_frames_of_reference),
                }
                for n in nodes
            ]
        }
