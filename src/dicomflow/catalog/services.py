"""Writes to the catalog. Batched: one transaction and a handful of queries per few hundred files.

``record_stored_files`` decides for each stored file whether it is new, a duplicate (same SOP
Instance UID, same sha256) or a conflict (same UID, different bytes: recorded, stored copy kept),
and writes Patient/Study/Series/Instance plus image and RT detail rows for the new ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from dicomflow.catalog.models import (
    ROI,
    ImageInformation,
    Instance,
    InstanceConflict,
    Patient,
    RTDose,
    RTImage,
    RTPlan,
    RTStructureSet,
    Series,
    Study,
)
from dicomflow.catalog.bulk import insert_rows
from dicomflow.core.dicom.header import InstanceHeader
from dicomflow.core.ingest import StoredFile
from dicomflow.core.store import FileStore, sha256_of


#: Instance columns written per new file (``insert_rows``: one statement for the whole batch).
_INSTANCE_FIELDS = (
    "series_id", "sop_class_uid", "sop_instance_uid", "instance_number", "transfer_syntax_uid", "sha256", "size",
    "stored_path", "received_from", "received_at",
)
#: What classifying a file against an already catalogued instance needs (``_classify_known``).
_KNOWN_FIELDS = ("id", "sop_instance_uid", "sha256", "stored_path")
#: ImageInformation columns with the model's defaults, for header dicts that leave one out.
_IMAGE_DEFAULTS = tuple(
    (f.name, f.get_default()) for f in ImageInformation._meta.concrete_fields if f.name not in ("id", "instance")
)


_WIDTHS: dict[type, dict[str, int]] = {}


def _fit(model, values: dict) -> dict:
    """``values`` with every string cut to its column's width (RT detail rows: labels, names)."""
    widths = _WIDTHS.get(model)
    if widths is None:
        widths = _WIDTHS[model] = {
            f.name: f.max_length for f in model._meta.concrete_fields if getattr(f, "max_length", None)
        }
    return {k: (v[: widths[k]] if type(v) is str and k in widths else v) for k, v in values.items()}


def parse_da(value: str) -> dt.date | None:
    """DICOM DA (YYYYMMDD; old YYYY.MM.DD accepted) → date, None if empty or invalid."""
    digits = value.replace(".", "").strip()[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def project_issuer(project_key: str) -> str:
    """Issuer of Patient ID recorded for a project's pseudonymous patients (catalog rows only)."""
    return f"dicomflow project {project_key}"[:64]


@dataclass
class BatchOutcome:
    new: list[StoredFile] = field(default_factory=list)
    duplicates: list[StoredFile] = field(default_factory=list)
    conflicts: list[tuple[StoredFile, str]] = field(default_factory=list)
    patient_ids: set[int] = field(default_factory=set)
    study_ids: set[int] = field(default_factory=set)
    series_ids: set[int] = field(default_factory=set)


class CatalogWriter:
    """Keeps UID → primary-key caches across batches of one import.

    With ``project`` (a research project's id) the rows are that project's de-identified copy:
    Patient/Study/Series get ``project`` set, and the patient is keyed by the issuer
    ``project_issuer(key)`` (the project assigns the pseudonym), so equal study subject IDs in
    two projects never share a Patient row nor collide with a clinical Patient ID.
    """

    def __init__(self, store: FileStore, received_from: str, project=None):
        self.store = store
        self.received_from = received_from[:512]
        self.project_id = getattr(project, "pk", project)
        self.patient_issuer = project_issuer(getattr(project, "key", str(project))) if project is not None else None
        self._patients: dict[tuple[str, str], int] = {}
        self._studies: dict[str, int] = {}
        self._series: dict[str, int] = {}

    def forget(self) -> None:
        """Drop the UID → key caches: after a rolled-back batch they may name rows that never were."""
        self._patients.clear()
        self._studies.clear()
        self._series.clear()

    # --- parents ---------------------------------------------------------------------------------
    def _ensure_patients(self, headers: list[InstanceHeader]) -> None:
        wanted = {(h.patient_id, h.issuer_of_patient_id): h for h in headers}
        missing = [k for k in wanted if k not in self._patients]
        if not missing:
            return
        ids = {k[0] for k in missing}
        for p in Patient.objects.filter(patient_id__in=ids).only("id", "patient_id", "issuer_of_patient_id"):
            self._patients[(p.patient_id, p.issuer_of_patient_id)] = p.id
        to_create = [
            Patient(
                patient_id=h.patient_id,
                issuer_of_patient_id=h.issuer_of_patient_id,
                patient_name=h.patient_name[:324],
                birth_date=parse_da(h.patient_birth_date),
                sex=h.patient_sex[:16],
                project_id=self.project_id,
            )
            for k, h in wanted.items()
            if k not in self._patients
        ]
        if to_create:
            Patient.objects.bulk_create(to_create, ignore_conflicts=True)
            for p in Patient.objects.filter(patient_id__in=ids).only("id", "patient_id", "issuer_of_patient_id"):
                self._patients[(p.patient_id, p.issuer_of_patient_id)] = p.id

    def _ensure_studies(self, headers: list[InstanceHeader]) -> None:
        wanted = {h.study_instance_uid: h for h in headers if h.study_instance_uid not in self._studies}
        if not wanted:
            return
        self._studies.update(Study.objects.filter(study_instance_uid__in=wanted).values_list("study_instance_uid", "id"))
        to_create = [
            Study(
                patient_id=self._patients[(h.patient_id, h.issuer_of_patient_id)],
                study_instance_uid=uid,
                study_date=parse_da(h.study_date),
                study_time=h.study_time[:16],
                study_id=h.study_id[:16],
                accession_number=h.accession_number[:64],
                description=h.study_description[:256],
                project_id=self.project_id,
            )
            for uid, h in wanted.items()
            if uid not in self._studies
        ]
        if to_create:
            Study.objects.bulk_create(to_create, ignore_conflicts=True)
            self._studies.update(
                Study.objects.filter(study_instance_uid__in=wanted).values_list("study_instance_uid", "id")
            )

    def _ensure_series(self, headers: list[InstanceHeader]) -> None:
        wanted = {h.series_instance_uid: h for h in headers if h.series_instance_uid not in self._series}
        if not wanted:
            return
        self._series.update(Series.objects.filter(series_instance_uid__in=wanted).values_list("series_instance_uid", "id"))
        to_create = [
            Series(
                study_id=self._studies[h.study_instance_uid],
                series_instance_uid=uid,
                modality=h.modality[:16],
                series_number=h.series_number,
                description=h.series_description[:256],
                series_date=parse_da(h.series_date),
                body_part_examined=h.body_part_examined[:64],
                frame_of_reference_uid=h.frame_of_reference_uid[:64],
                project_id=self.project_id,
            )
            for uid, h in wanted.items()
            if uid not in self._series
        ]
        if to_create:
            Series.objects.bulk_create(to_create, ignore_conflicts=True)
            self._series.update(
                Series.objects.filter(series_instance_uid__in=wanted).values_list("series_instance_uid", "id")
            )

    # --- instances -------------------------------------------------------------------------------
    def record(self, items: list[StoredFile]) -> BatchOutcome:
        """Catalogue one batch. Files this batch created but that turn out not to be new are removed."""
        outcome = BatchOutcome()
        if not items:
            return outcome
        if self.patient_issuer is not None:
            for item in items:
                item.header.issuer_of_patient_id = self.patient_issuer
        self.store.flush()
        with transaction.atomic():
            existing = {
                row["sop_instance_uid"]: row
                for row in Instance.objects.filter(sop_instance_uid__in={i.header.sop_instance_uid for i in items})
                .values(*_KNOWN_FIELDS)
            }
            fresh: dict[str, StoredFile] = {}
            for item in items:
                uid = item.header.sop_instance_uid
                known = existing.get(uid)
                if known is None and uid in fresh:
                    known = {"id": None, "sha256": fresh[uid].stored.sha256, "stored_path": fresh[uid].stored.relpath}
                if known is not None:
                    self._classify_known(item, known, outcome)
                    continue
                if not item.stored.created and not self._adopt_existing_file(item):
                    outcome.conflicts.append((item, "a different file occupies this instance's store path"))
                    continue
                fresh[uid] = item
            self._insert(list(fresh.values()), outcome)
            self.touched([i for i in outcome.duplicates] + [i for i, _ in outcome.conflicts], outcome)
            conflict_uids = {i.header.sop_instance_uid for i, _ in outcome.conflicts}
            instance_ids = dict(
                Instance.objects.filter(sop_instance_uid__in=conflict_uids).values_list("sop_instance_uid", "id")
            )
            InstanceConflict.objects.bulk_create(
                [
                    InstanceConflict(
                        instance_id=instance_ids[i.header.sop_instance_uid],
                        sha256=i.stored.sha256,
                        size=i.stored.size,
                        source=f"{self.received_from}:{i.display_name}"[:1024],
                    )
                    for i, _ in outcome.conflicts
                    if i.header.sop_instance_uid in instance_ids
                ]
            )
        return outcome

    def _classify_known(self, item: StoredFile, known: dict, outcome: BatchOutcome) -> None:
        same = item.stored.sha256 == known["sha256"]
        if item.stored.created and item.stored.relpath != known["stored_path"]:
            self.store.remove(item.stored.relpath)  # our copy is surplus: the catalogued one stays
        if same:
            outcome.duplicates.append(item)
        else:
            if item.stored.created and item.stored.relpath == known["stored_path"]:
                self.store.remove(item.stored.relpath)  # the catalogued file had vanished; not ours to replace
            outcome.conflicts.append((item, "same SOP Instance UID with different content; stored copy kept"))

    def _adopt_existing_file(self, item: StoredFile) -> bool:
        """A file sits at the path but no row names it (a crash between store and commit)."""
        on_disk = self.store.path_of(item.stored.relpath)
        try:
            sha, _ = sha256_of(on_disk)
        except FileNotFoundError:
            return False
        return sha == item.stored.sha256

    def _insert(self, items: list[StoredFile], outcome: BatchOutcome) -> None:
        if not items:
            return
        headers = [i.header for i in items]
        self._ensure_patients(headers)
        self._ensure_studies(headers)
        self._ensure_series(headers)
        now = timezone.now()
        values = [
            (
                self._series[i.header.series_instance_uid],
                i.header.sop_class_uid[:64],
                i.header.sop_instance_uid,
                i.header.instance_number,
                i.header.transfer_syntax_uid[:64],
                i.stored.sha256,
                i.stored.size,
                i.stored.relpath,
                self.received_from,
                now,
            )
            for i in items
        ]
        try:
            with transaction.atomic():
                insert_rows(Instance, _INSTANCE_FIELDS, values)
        except IntegrityError:
            # Another writer catalogued some of these UIDs between our read and write
            # (possible on PostgreSQL): fall back to one row at a time.
            created = []
            for row, item in zip(values, items):
                try:
                    with transaction.atomic():
                        Instance(**dict(zip(_INSTANCE_FIELDS, row))).save(force_insert=True)
                    created.append(item)
                except IntegrityError:  # theirs now: a duplicate if the bytes agree, else a conflict
                    known = (
                        Instance.objects.filter(sop_instance_uid=item.header.sop_instance_uid)
                        .values(*_KNOWN_FIELDS)
                        .first()
                    )
                    if known is None:
                        raise
                    self._classify_known(item, known, outcome)
            items = created
        ids = dict(
            Instance.objects.filter(sop_instance_uid__in=[i.header.sop_instance_uid for i in items]).values_list(
                "sop_instance_uid", "id"
            )
        )
        self._insert_details([ids[i.header.sop_instance_uid] for i in items], items)
        outcome.new.extend(items)
        for item in items:
            h = item.header
            outcome.patient_ids.add(self._patients[(h.patient_id, h.issuer_of_patient_id)])
            outcome.study_ids.add(self._studies[h.study_instance_uid])
            outcome.series_ids.add(self._series[h.series_instance_uid])

    def touched(self, items: list[StoredFile], outcome: BatchOutcome) -> None:
        """Count the patients/studies/series of duplicates and conflicts as touched too."""
        headers = [item.header for item in items]
        self._ensure_patients(headers)
        self._ensure_studies(headers)
        self._ensure_series(headers)
        for h in headers:
            outcome.patient_ids.add(self._patients[(h.patient_id, h.issuer_of_patient_id)])
            outcome.study_ids.add(self._studies[h.study_instance_uid])
            outcome.series_ids.add(self._series[h.series_instance_uid])

    @staticmethod
    def _insert_details(instance_ids: list[int], items: list[StoredFile]) -> None:
        images, structure_sets, plans, doses, rt_images = [], [], [], [], []
        rois_by_ss: list[tuple[RTStructureSet, list[dict]]] = []
        for instance_id, item in zip(instance_ids, items):
            h = item.header
            if h.image:
                images.append((instance_id, *(h.image.get(k, default) for k, default in _IMAGE_DEFAULTS)))
            if h.structure_set:
                info = dict(h.structure_set)
                rois = info.pop("rois")
                info["structure_set_date"] = parse_da(info["structure_set_date"])
                ss = RTStructureSet(instance_id=instance_id, **_fit(RTStructureSet, info))
                structure_sets.append(ss)
                rois_by_ss.append((ss, rois))
            if h.plan:
                info = dict(h.plan)
                info["review_date"] = parse_da(info["review_date"])
                plans.append(RTPlan(instance_id=instance_id, **_fit(RTPlan, info)))
            if h.dose:
                doses.append(RTDose(instance_id=instance_id, **_fit(RTDose, h.dose)))
            if h.rt_image:
                rt_images.append(RTImage(instance_id=instance_id, **_fit(RTImage, h.rt_image)))
        if images:
            insert_rows(ImageInformation, ("instance_id", *(k for k, _ in _IMAGE_DEFAULTS)), images)
        RTStructureSet.objects.bulk_create(structure_sets)
        ROI.objects.bulk_create(
            [ROI(structure_set_id=ss.id, **_fit(ROI, r)) for ss, rois in rois_by_ss for r in rois]
        )
        RTPlan.objects.bulk_create(plans)
        RTDose.objects.bulk_create(doses)
        RTImage.objects.bulk_create(rt_images)
