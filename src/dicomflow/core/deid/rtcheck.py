"""RT integrity after de-identification: every reference resolves inside the output set or is
reported as external.

Workers extract a small summary per output object (``references_of``); the job resolves them all
at the end (``resolve_references``) without re-reading any file.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomflow.core.deid.engine import _is_deferred

_NESTED_KINDS = {
    "ReferencedSOPInstanceUID": "instance",
    "SeriesInstanceUID": "series",
    "StudyInstanceUID": "study",
    "FrameOfReferenceUID": "frame_of_reference",
    "ReferencedFrameOfReferenceUID": "frame_of_reference",
    "RelatedFrameOfReferenceUID": "frame_of_reference",
}


def references_of(ds: Dataset) -> dict:
    """Own identity and outgoing references (new UIDs) of one output object."""
    refs: set[tuple[str, str]] = set()
    _walk(ds, refs, depth=0)
    return {
        "sop": str(ds.get("SOPInstanceUID", "")),
        "series": str(ds.get("SeriesInstanceUID", "")),
        "study": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference": str(ds.get("FrameOfReferenceUID", "")),
        "references": sorted(refs),
    }


def _walk(ds: Dataset, refs: set, depth: int) -> None:
    for tag in list(ds.keys()):
        if _is_deferred(ds.get_item(tag, keep_deferred=True)):
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            if elem.keyword in ("DeidentificationMethodCodeSequence",):
                continue
            for item in elem.value or []:
                _walk(item, refs, depth + 1)
            continue
        kind = _NESTED_KINDS.get(elem.keyword)
        if kind and (depth > 0 or kind == "frame_of_reference" and elem.keyword != "FrameOfReferenceUID"):
            values = elem.value if isinstance(elem.value, (list, tuple)) or hasattr(elem.value, "append") else [elem.value]
            for v in values:
                if v:
                    refs.add((kind, str(v)))


def resolve_references(objects: dict[str, dict]) -> dict:
    """``objects``: output path -> ``references_of`` summary. Returns counts and externals."""
    known = {
        "instance": {o["sop"] for o in objects.values()},
        "series": {o["series"] for o in objects.values()},
        "study": {o["study"] for o in objects.values()},
        "frame_of_reference": {o["frame_of_reference"] for o in objects.values() if o["frame_of_reference"]},
    }
    # RT Referenced Study Sequence names the study by its UID through Referenced SOP Instance UID.
    known["instance"] |= known["study"]
    total = 0
    external = []
    for path, obj in sorted(objects.items()):
        for kind, uid in obj["references"]:
            total += 1
            if uid not in known[kind]:
                external.append({"path": path, "kind": kind, "uid": uid})
    return {"references": total, "resolved": total - len(external), "external": external}
