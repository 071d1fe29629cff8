"""Re-identification: map a de-identified object (or a result derived from one) back to the
clinical identity and the original UIDs, using a project's reverse map.

The reverse map is plain data (JSON records) so the Django side can keep it wherever its audit
requires; the CLI keeps it as JSONL next to the project key (mode 600).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomflow.core.deid.engine import CONTROL_TAGS, _is_deferred
from dicomflow.core.deid.pseudonyms import shift_da, shift_dt


@dataclass
class ReverseMap:
    """new UID -> original; pseudonym -> patient identity; new study UID -> study identifiers."""

    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, dict] = field(default_factory=dict)
    studies: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[dict]) -> ReverseMap:
        rmap = cls()
        rmap.add_records(records)
        return rmap

    def add_records(self, records: Iterable[dict]) -> None:
        for r in records:
            kind = r.get("kind")
            if kind == "uid":
                self.uids[r["new"]] = r["original"]
            elif kind == "patient":
                self.patients[r["pseudonym"]] = r
            elif kind == "study":
                self.studies[r["uid"]] = r

    def records(self) -> list[dict]:
        out = [{"kind": "uid", "new": n, "original": o} for n, o in sorted(self.uids.items())]
        out += [self.patients[p] for p in sorted(self.patients)]
        out += [self.studies[s] for s in sorted(self.studies)]
        return out


def reidentify_dataset(ds: Dataset, reverse_map: ReverseMap) -> int:
    """Restore identity, UIDs and (when they were shifted) dates in place; returns values changed.

    UIDs not in the map (e.g. the new SOP Instance UID of a result) are left as they are. Dates are
    shifted back only when the object says Longitudinal Temporal Information Modified = MODIFIED.
    """
    patient = reverse_map.patients.get(str(ds.get("PatientID", "") or ""))
    shifted = str(ds.get("LongitudinalTemporalInformationModified", "")) == "MODIFIED"
    offset = -int(patient["date_offset_days"]) if patient and shifted else 0
    new_study_uid = str(ds.get("StudyInstanceUID", "") or "")
    changed = _walk(ds, reverse_map, offset)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        old = str(meta.MediaStorageSOPInstanceUID)
        if old in reverse_map.uids:
            meta.MediaStorageSOPInstanceUID = reverse_map.uids[old]
    if patient:
        ds.PatientID = patient["patient_id"]
        ds.PatientName = patient["patient_name"]
        if patient.get("birth_date"):
            ds.PatientBirthDate = patient["birth_date"]
        if patient.get("sex") and not ds.get("PatientSex"):
            ds.PatientSex = patient["sex"]
        changed += 2
    study = reverse_map.studies.get(new_study_uid)
    if study:
        if study.get("accession_number"):
            ds.AccessionNumber = study["accession_number"]
        if study.get("study_id"):
            ds.StudyID = study["study_id"]
    for tag in CONTROL_TAGS:
        if tag in ds:
            del ds[tag]
    return changed


def _walk(ds: Dataset, rmap: ReverseMap, offset: int) -> int:
    changed = 0
    for tag in list(ds.keys()):
        if _is_deferred(ds.get_item(tag, keep_deferred=True)):
            continue
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                changed += _walk(item, rmap, offset)
        elif vr == "UI" and elem.value:
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            new = [rmap.uids.get(str(v), str(v)) for v in values]
            if new != [str(v) for v in values]:
                changed += 1
                ds[tag] = DataElement(tag, vr, new if len(new) > 1 else new[0])
        elif vr in ("DA", "DT") and offset and elem.value:
            shift = shift_da if vr == "DA" else shift_dt
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            new = [shift(str(v), offset) or str(v) for v in values]
            ds[tag] = DataElement(tag, vr, new if len(new) > 1 else new[0])
            changed += 1
    return changed
