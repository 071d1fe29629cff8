"""RT integrity after de-identification: every reference resolves inside the output set or is
reported as external.

Workers extract a small summary per output object (``references_of``); the job resolves them all
at the end (``resolve_references``) without re-reading any file.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from dicomflow.core.deid.engine import _is_deferred, _vr_of

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


_TAG_KINDS = {tag_for_keyword(k): (k, kind) for k, kind in _NESTED_KINDS.items()}
_SKIP = tag_for_keyword("DeidentificationMethodCodeSequence")


def _walk(ds: Dataset, refs: set, depth: int) -> None:
    for tag, raw in list(ds._dict.items()):  # as stored: raw, deferred or converted
        t = int(tag)  # plain ints compare in C (pydicom's tags compare in Python)
        found = _TAG_KINDS.get(t)
        if found is None:
            # Only sequences need a look inside; other elements are not converted at all.
            vr = raw.VR
            if vr is not None and vr != "SQ" and vr != "UN":
                continue
            if t == _SKIP or _is_deferred(raw) or _vr_of(t, raw) != "SQ":
                continue
            for item in ds[tag].value or []:
                _walk(item, refs, depth + 1)
            continue
        keyword, kind = found
        if depth > 0 or keyword in ("ReferencedFrameOfReferenceUID", "RelatedFrameOfReferenceUID"):
            value = ds[tag].value
            for v in value if isinstance(value, (list, tuple)) or hasattr(value, "append") else [value]:
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
