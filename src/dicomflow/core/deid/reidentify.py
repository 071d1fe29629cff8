"""Re-identification: map a de-identified object (or a result derived from one) back to the
clinical identity and the original UIDs, using a project's reverse map.

The reverse map is plain data (JSON records) so the Django side can keep it wherever its audit
requires; the CLI keeps it as JSONL next to the project key (mode 600).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomflow.core.deid.engine import _is_deferred
from dicomflow.core.deid.pseudonyms import shift_da, shift_dt
from dicomflow.errors import InputError

IDENTITY_FIELDS = ("patient_id", "issuer", "patient_name", "birth_date")


class ReidentificationError(InputError):
    """This object cannot be re-identified with this reverse map (wrong project, ambiguous map)."""


def _same_person(a: dict, b: dict) -> bool:
    return all((a.get(k) or "") == (b.get(k) or "") for k in IDENTITY_FIELDS)


@dataclass
class ReverseMap:
    """new UID -> original; pseudonym -> patient identity; new study UID -> study identifiers.

    A pseudonym recorded for two different identities (an old map keyed by Patient ID alone) is
    ``ambiguous``: re-identifying it fails instead of restoring one of the two people.
    """

    uids: dict[str, str] = field(default_factory=dict)
    patients: dict[str, dict] = field(default_factory=dict)
    studies: dict[str, dict] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    _legacy: set[str] = field(default_factory=set, repr=False)

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
                known = self.patients.get(r["pseudonym"])
                if known is None:
                    self.patients[r["pseudonym"]] = dict(r)
                elif not _same_person(known, r):
                    self.ambiguous.add(r["pseudonym"])
                elif "shifted_dates" in r and "shifted_dates" in known:
                    known["shifted_dates"] = sorted(set(known["shifted_dates"]) | set(r["shifted_dates"]))
                else:  # a record from before issue 13 does not say which dates it shifted: all were
                    known.pop("shifted_dates", None)
                    self._legacy.add(r["pseudonym"])
                if r["pseudonym"] in self._legacy:
                    self.patients[r["pseudonym"]].pop("shifted_dates", None)
            elif kind == "study":
                self.studies[r["uid"]] = r

    def records(self) -> list[dict]:
        out = [{"kind": "uid", "new": n, "original": o} for n, o in sorted(self.uids.items())]
        out += [self.patients[p] for p in sorted(self.patients)]
        out += [self.studies[s] for s in sorted(self.studies)]
        return out


def reidentify_dataset(ds: Dataset, reverse_map: ReverseMap) -> int:
    """Restore identity, UIDs and the dates the engine shifted, in place; returns values changed.

    UIDs not in the map (e.g. the new SOP Instance UID of a result) are left as they are. Dates
    are shifted back only when the object says Longitudinal Temporal Information Modified =
    MODIFIED, and only values the de-identification produced by shifting (recorded per patient;
    a processor's own dates and dummy dates stay). The de-identification markers (Patient
    Identity Removed, method, code sequence) are kept. Raises ``ReidentificationError`` when the
    patient is ambiguous in the map or when nothing of the object is in the map (wrong project).
    """
    for tag in [t for t in ds._dict if t >> 16 in (0x0000, 0x0002)]:
        del ds[tag]  # command or file meta elements inside a data set: never written back
    pseudonym = str(ds.get("PatientID", "") or "")
    if pseudonym in reverse_map.ambiguous:
        raise ReidentificationError(
            "the project's reverse map holds two different patients for this object's pseudonym; "
            "refused instead of restoring the wrong person"
        )
    patient = reverse_map.patients.get(pseudonym)
    shifted = str(ds.get("LongitudinalTemporalInformationModified", "")) == "MODIFIED"
    offset = -int(patient["date_offset_days"]) if patient and shifted else 0
    dates = set(patient["shifted_dates"]) if patient and "shifted_dates" in patient else None
    new_study_uid = str(ds.get("StudyInstanceUID", "") or "")
    changed = _walk(ds, reverse_map, offset, dates)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        old = str(meta.MediaStorageSOPInstanceUID)
        if old in reverse_map.uids:
            meta.MediaStorageSOPInstanceUID = reverse_map.uids[old]
            changed += 1
    if patient is None and changed == 0:
        raise ReidentificationError(
            "nothing in this object is in the project's reverse map (de-identified by another project?)"
        )
    if patient:
        ds.PatientID = patient["patient_id"]
        ds.PatientName = patient["patient_name"]
        if patient.get("issuer"):
            ds.IssuerOfPatientID = patient["issuer"]
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
    return changed


def _walk(ds: Dataset, rmap: ReverseMap, offset: int, dates: set[str] | None) -> int:
    changed = 0
    for tag in list(ds.keys()):
        if _is_deferred(ds.get_item(tag, keep_deferred=True)):
            continue
        elem = ds[tag]
        vr = elem.VR
        if vr == "SQ":
            for item in elem.value or []:
                changed += _walk(item, rmap, offset, dates)
        elif vr == "UI" and elem.value:
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            new = [rmap.uids.get(str(v), str(v)) for v in values]
            if new != [str(v) for v in values]:
                changed += 1
                ds[tag] = DataElement(tag, vr, new if len(new) > 1 else new[0])
        elif vr in ("DA", "DT") and offset and elem.value:
            shift = shift_da if vr == "DA" else shift_dt
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            new = [
                (shift(str(v), offset) or str(v)) if dates is None or str(v)[:8] in dates else str(v)
                for v in values
            ]
            if new != [str(v) for v in values]:
                ds[tag] = DataElement(tag, vr, new if len(new) > 1 else new[0])
                changed += 1
    return changed


@dataclass
class ReidentifyOutcome:
    files_in: int = 0
    files_out: int = 0
    values_restored: int = 0
    failed: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def contract(self) -> dict:
        return {"files_in": self.files_in, "files_out": self.files_out, "failed": self.failed}


def reidentify_files(files: Iterable[Path | str], dst: Path | str, reverse_map: ReverseMap,
                     defer_size: int = 64 * 1024) -> ReidentifyOutcome:
    """Re-identify each file on its own into ``dst/<study>/<series>/<sop>.dcm``.

    A file that cannot be read, is not in the map or cannot be written is reported with its
    reason (never a value) and the others go on.
    """
    from pydicom import dcmread

    from dicomflow.core.deid.job import _open_regular

    out = ReidentifyOutcome()
    dst = Path(dst)
    for path in files:
        out.files_in += 1
        fh, refusal = _open_regular(Path(path))
        if fh is None:
            out.failed.append({"path": str(path), "reason": refusal[1]})
            continue
        try:
            with fh:
                ds = dcmread(fh, defer_size=defer_size)
                out.values_restored += reidentify_dataset(ds, reverse_map)
                parts = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
                if not all(parts):
                    raise ReidentificationError("Study, Series or SOP Instance UID missing")
                target = dst.joinpath(*parts[:2], parts[2] + ".dcm")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
                try:
                    ds.save_as(tmp, enforce_file_format=True)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
        except ReidentificationError as exc:
            out.failed.append({"path": str(path), "reason": str(exc)})
            continue
        except Exception as exc:  # unreadable or malformed: the class, never a value
            out.failed.append({"path": str(path), "reason": f"not a readable DICOM file ({type(exc).__name__})"})
            continue
        out.outputs.append(target)
        out.files_out += 1
    return out
