"""Query/Retrieve SCP over the catalog: C-FIND, C-GET and C-MOVE for allowed peers, scoped like the API.

The receiver (``dicomflow scp`` / ``serve``) serves these on its pynetdicom path when given a
:class:`QueryRetrieveSCP` (plain storage associations keep the fast path). Who may see what:

- the association itself must pass the receiver's checks (called AE title, ``--allow`` list);
- the peer is the enabled DICOM node (admin: Export → DICOM nodes) whose AE title is the calling AE
  title and whose host is the peer's address (or resolves to it), and it acts as that node's
  **Q/R peer account** (``DicomNode.qr_user``): exactly what that account sees through the API —
  its projects' de-identified copies, the clinical pool only with ``projects.view_clinical_pool``
  (or superuser). A peer with no such node or account gets nothing: C-FIND and retrievals are
  answered 0x0124 (Refused: Not authorised).
- C-GET/C-MOVE of anything the account cannot see — another project's copy, an unknown UID —
  is refused the same way (0x0124): nobody learns what exists outside their scope.
- C-MOVE destinations must be enabled DICOM nodes (else 0xA801, move destination unknown).

Each retrieval is audited (``qr_serve``) under the peer's account, with counts and no UIDs.
Matching: single values, lists (``\\``), ``*``/``?`` wildcards (case-insensitive for names),
date ranges; universal matching for empty keys. Levels PATIENT, STUDY, SERIES and IMAGE.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from django.db import close_old_connections, connection
from django.db.models import Count, Q, QuerySet
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomflow.accounts.audit import denied, record
from dicomflow.accounts.models import AuditAction
from dicomflow.catalog.models import Instance, Patient, Series, Study
from dicomflow.export.models import DicomNode
from dicomflow.projects import selectors

log = logging.getLogger(__name__)

FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
QR_SYNTAXES = frozenset(str(m) for m in (*FIND_MODELS, *GET_MODELS, *MOVE_MODELS))

STATUS_PENDING = 0xFF00
STATUS_SUCCESS = 0x0000
STATUS_NOT_AUTHORISED = 0x0124
STATUS_IDENTIFIER_MISMATCH = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700
MAX_FIND_MATCHES = 5000
MAX_RETRIEVE = 65535  # sub-operation counts are US


@dataclass(frozen=True)
class Peer:
    """The calling application entity, as the audit log names it."""

    ae_title: str
    address: str
    user: object | None
    pk: None = None
    is_operator: bool = False

    def get_username(self) -> str:
        name = getattr(self.user, "get_username", None)
        return name() if callable(name) else f"dicom:{self.ae_title}@{self.address}"


def _host_matches(host: str, address: str) -> bool:
    host = (host or "").strip().strip("[]")
    if host == address:
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return False
    return any(str(info[4][0]).split("%")[0] == address for info in infos)


def peer_of(assoc) -> Peer:
    """The calling AE of ``assoc`` and the account it acts as (None: an unknown peer)."""
    calling = (assoc.requestor.ae_title or "").strip()
    address = str(assoc.requestor.address)
    if address.startswith("::ffff:"):
        address = address[7:]
    nodes = DicomNode.objects.filter(enabled=True, ae_title=calling, qr_user__isnull=False).select_related("qr_user")
    for node in nodes:
        if _host_matches(node.host, address) and node.qr_user.is_active:
            return Peer(calling, address, node.qr_user)
    return Peer(calling, address, None)


# --- matching ---------------------------------------------------------------------------------------
def _values(ds: Dataset, keyword: str) -> list[str]:
    """The matching values of a key: [] for universal matching (absent, empty, '*')."""
    if keyword not in ds:
        return []
    value = ds[keyword].value
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        items = [str(v).strip() for v in value]
    else:
        items = [v.strip() for v in str(value).split("\\")]
    items = [v for v in items if v]
    return [] if items in ([], ["*"]) else items


def _wildcard(value: str) -> str:
    return "^" + re.escape(value).replace(r"\*", ".*").replace(r"\?", ".") + "$"


def _match(qs: QuerySet, field: str, values: list[str], *, names: bool = False) -> QuerySet:
    if not values:
        return qs
    condition = Q()
    for value in values:
        if "*" in value or "?" in value:
            condition |= Q(**{f"{field}__{'iregex' if names else 'regex'}": _wildcard(value)})
        else:
            condition |= Q(**{f"{field}__{'iexact' if names else 'exact'}": value})
    return qs.filter(condition)


def _dicom_day(text: str):
    from dicomflow.core.intake_filter import parse_dicom_date

    return parse_dicom_date(text.replace("-", "")) if len(text.replace("-", "")) == 8 else None


def _match_date(qs: QuerySet, field: str, values: list[str]) -> QuerySet:
    if not values:
        return qs
    text = values[0]
    if "-" in text:
        start, _, end = text.partition("-")
        first, last = _dicom_day(start) if start else None, _dicom_day(end) if end else None
        if first:
            qs = qs.filter(**{f"{field}__gte": first})
        if last:
            qs = qs.filter(**{f"{field}__lte": last})
        return qs
    day = _dicom_day(text)
    return qs.filter(**{field: day}) if day else qs.none()


def _da(value) -> str:
    return value.strftime("%Y%m%d") if value else ""


def find_matches(user, ds: Dataset) -> tuple[str, list[dict]]:
    """Level and the matching rows' values (keyword → value) within what ``user`` may see."""
    level = str(ds.get("QueryRetrieveLevel", "")).strip().upper()
    if level == "PATIENT":
        qs = selectors.visible_patients(user)
        qs = _match(qs, "patient_id", _values(ds, "PatientID"))
        qs = _match(qs, "patient_name", _values(ds, "PatientName"), names=True)
        qs = qs.annotate(n_studies=Count("studies", distinct=True)).order_by("patient_id", "pk")[:MAX_FIND_MATCHES + 1]
        return level, [{"PatientID": p.patient_id, "PatientName": p.patient_name, "PatientBirthDate": _da(p.birth_date),
                        "PatientSex": p.sex, "NumberOfPatientRelatedStudies": p.n_studies} for p in qs]
    if level == "STUDY":
        qs = selectors.visible_studies(user).select_related("patient")
        qs = _match(qs, "patient__patient_id", _values(ds, "PatientID"))
        qs = _match(qs, "patient__patient_name", _values(ds, "PatientName"), names=True)
        qs = _match(qs, "study_instance_uid", _values(ds, "StudyInstanceUID"))
        qs = _match(qs, "accession_number", _values(ds, "AccessionNumber"))
        qs = _match(qs, "study_id", _values(ds, "StudyID"))
        qs = _match(qs, "description", _values(ds, "StudyDescription"), names=True)
        qs = _match_date(qs, "study_date", _values(ds, "StudyDate"))
        modalities = _values(ds, "ModalitiesInStudy")
        if modalities:
            qs = qs.filter(pk__in=_match(Series.objects.all(), "modality", modalities).values("study_id"))
        qs = qs.annotate(n_series=Count("series", distinct=True), n_instances=Count("series__instances"))
        rows = list(qs.order_by("-study_date", "pk")[:MAX_FIND_MATCHES + 1])
        mods: dict[int, set[str]] = {}
        for study_id, modality in Series.objects.filter(study__in=[s.pk for s in rows]).values_list("study_id", "modality"):
            mods.setdefault(study_id, set()).add(modality)
        return level, [{
            "PatientID": s.patient.patient_id, "PatientName": s.patient.patient_name,
            "PatientBirthDate": _da(s.patient.birth_date), "PatientSex": s.patient.sex,
            "StudyInstanceUID": s.study_instance_uid, "StudyDate": _da(s.study_date), "StudyTime": s.study_time,
            "StudyID": s.study_id, "AccessionNumber": s.accession_number, "StudyDescription": s.description,
            "ModalitiesInStudy": sorted(mods.get(s.pk, ())), "NumberOfStudyRelatedSeries": s.n_series,
            "NumberOfStudyRelatedInstances": s.n_instances,
        } for s in rows]
    if level == "SERIES":
        qs = selectors.visible_series(user).select_related("study")
        qs = _match(qs, "study__study_instance_uid", _values(ds, "StudyInstanceUID"))
        qs = _match(qs, "series_instance_uid", _values(ds, "SeriesInstanceUID"))
        qs = _match(qs, "modality", _values(ds, "Modality"))
        qs = _match(qs, "description", _values(ds, "SeriesDescription"), names=True)
        qs = qs.annotate(n_instances=Count("instances")).order_by("study_id", "series_number", "pk")
        return level, [{
            "StudyInstanceUID": s.study.study_instance_uid, "SeriesInstanceUID": s.series_instance_uid,
            "Modality": s.modality, "SeriesNumber": s.series_number, "SeriesDescription": s.description,
            "NumberOfSeriesRelatedInstances": s.n_instances,
        } for s in qs[:MAX_FIND_MATCHES + 1]]
    if level == "IMAGE":
        qs = _instances(user, ds).select_related("series__study")
        return level, [{
            "StudyInstanceUID": i.series.study.study_instance_uid, "SeriesInstanceUID": i.series.series_instance_uid,
            "SOPInstanceUID": i.sop_instance_uid, "SOPClassUID": i.sop_class_uid, "InstanceNumber": i.instance_number,
        } for i in qs[:MAX_FIND_MATCHES + 1]]
    return level, []


def _instances(user, ds: Dataset) -> QuerySet[Instance]:
    """The instances a retrieve identifier (or an IMAGE-level query) names, within ``user``'s sight."""
    qs = selectors.visible_instances(user)
    patient_ids = _values(ds, "PatientID")
    if patient_ids:
        qs = qs.filter(series__study__patient__in=_match(Patient.objects.all(), "patient_id", patient_ids))
    qs = _match(qs, "series__study__study_instance_uid", _values(ds, "StudyInstanceUID"))
    qs = _match(qs, "series__series_instance_uid", _values(ds, "SeriesInstanceUID"))
    qs = _match(qs, "sop_instance_uid", _values(ds, "SOPInstanceUID"))
    return qs.order_by("series_id", "instance_number", "pk")


def _retrieve_keys_given(ds: Dataset) -> bool:
    """A retrieve must name something: a patient, study, series or instance (never 'everything')."""
    return any(_values(ds, k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))


def _response(request: Dataset, level: str, row: dict) -> Dataset:
    out = Dataset()
    out.QueryRetrieveLevel = level
    for element in request:
        keyword = element.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        value = row.get(keyword, None)
        if keyword in row and value not in (None, ""):
            setattr(out, keyword, value)
        else:
            setattr(out, keyword, None if element.VR in ("US", "UL", "IS", "DS", "SS", "SL") else "")
    for keyword in {"PATIENT": ("PatientID",), "STUDY": ("StudyInstanceUID",),
                    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
                    "IMAGE": ("SeriesInstanceUID", "SOPInstanceUID")}.get(level, ()):
        if keyword not in out and row.get(keyword):
            setattr(out, keyword, row[keyword])
    out.SpecificCharacterSet = "ISO_IR 192"
    return out


def _move_contexts(files) -> list:
    """The storage contexts a C-MOVE's sub-association proposes: each SOP class with the files' own
    transfer syntaxes and the uncompressed ones (at most 128 contexts; Verification when empty)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    syntaxes: dict[str, list[str]] = {}
    for _, sop_class, syntax in files:
        known = syntaxes.setdefault(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        if syntax and syntax not in known:
            known.insert(0, syntax)
    contexts = [build_context(sop_class, list(ts)) for sop_class, ts in sorted(syntaxes.items()) if sop_class]
    return contexts[:128] or [build_context(Verification)]


# --- the provider -------------------------------------------------------------------------------------
class QueryRetrieveSCP:
    """What :class:`~dicomflow.intake.network.scp.StorageSCP` needs to serve Query/Retrieve."""

    contexts = (*FIND_MODELS, *GET_MODELS, *MOVE_MODELS)

    def __init__(self, store_root: str | Path | None = None):
        from django.conf import settings

        self.store_root = Path(store_root or settings.STORE_DIR)

    def configure(self, ae) -> None:
        for model in self.contexts:
            ae.add_supported_context(model, ALL_TRANSFER_SYNTAXES[:4])
        for cx in AllStoragePresentationContexts:  # C-GET: we act as the Storage SCU of the peer's association
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)

    def handlers(self) -> list:
        return [(evt.EVT_C_FIND, self.on_find), (evt.EVT_C_GET, self.on_get), (evt.EVT_C_MOVE, self.on_move)]

    @staticmethod
    def wants(raw: bytes) -> bool:
        """Whether an A-ASSOCIATE-RQ proposes any Query/Retrieve context (then pynetdicom serves it)."""
        from pynetdicom.pdu import A_ASSOCIATE_RQ

        try:
            pdu = A_ASSOCIATE_RQ()
            pdu.decode(raw)
            proposed = {str(cx.abstract_syntax) for cx in pdu.to_primitive().presentation_context_definition_list}
        except Exception:
            return True  # unreadable: let pynetdicom answer it its way
        return bool(proposed & QR_SYNTAXES)

    # handlers run on association threads: each uses its own database connection and closes it
    def on_find(self, event):
        close_old_connections()
        try:
            peer = peer_of(event.assoc)
            ds = event.identifier
            if peer.user is None:
                log.warning("Q/R: refused a C-FIND from %s@%s: not a configured peer", peer.ae_title, peer.address)
                yield STATUS_NOT_AUTHORISED, None
                return
            level, rows = find_matches(peer.user, ds)
            if not level or level not in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
                yield STATUS_IDENTIFIER_MISMATCH, None
                return
            if len(rows) > MAX_FIND_MATCHES:
                yield STATUS_OUT_OF_RESOURCES, None
                return
            for row in rows:
                if event.is_cancelled:
                    yield 0xFE00, None
                    return
                yield STATUS_PENDING, _response(ds, level, row)
        finally:
            connection.close()

    def _retrieval(self, event, what: str) -> tuple[Peer, list[tuple[str, str, str]] | None]:
        """The peer and the (stored path, SOP class, transfer syntax) it may retrieve; None: refused (audited)."""
        peer = peer_of(event.assoc)
        ds = event.identifier
        if peer.user is None:
            log.warning("Q/R: refused a %s from %s@%s: not a configured peer", what, peer.ae_title, peer.address)
            denied(peer, AuditAction.QR_SERVE, obj=f"peer {peer.ae_title}", detail=f"{what}: not a configured peer")
            return peer, None
        rows = list(_instances(peer.user, ds).values_list("stored_path", "series_id", "sop_class_uid",
                                                           "transfer_syntax_uid")[:MAX_RETRIEVE + 1]) \
            if _retrieve_keys_given(ds) else []
        if not rows or len(rows) > MAX_RETRIEVE:
            denied(peer.user, AuditAction.QR_SERVE, obj=f"peer {peer.ae_title}",
                   detail=f"{what}: nothing the peer account may retrieve matches")
            return peer, None
        series = len({row[1] for row in rows})
        record(peer.user, AuditAction.QR_SERVE, obj=f"peer {peer.ae_title}",
               detail=f"{what}: {len(rows)} instances of {series} series")
        return peer, [(str(self.store_root / path), sop_class, syntax) for path, _, sop_class, syntax in rows]

    def _send(self, event, files):
        for path, _, _ in files:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            try:
                yield STATUS_PENDING, dcmread(path)
            except Exception as exc:  # a missing or unreadable stored file: that sub-operation fails
                log.error("Q/R: could not read a stored file for a retrieval (%s)", exc.__class__.__name__)
                yield STATUS_PENDING, Dataset()

    def on_get(self, event):
        close_old_connections()
        try:
            _, files = self._retrieval(event, "C-GET")
        finally:
            connection.close()
        if files is None:
            yield 1
            yield STATUS_NOT_AUTHORISED, None
            return
        yield len(files)
        yield from self._send(event, files)

    def on_move(self, event):
        close_old_connections()
        try:
            destination = DicomNode.objects.filter(enabled=True, ae_title=(event.move_destination or b"").decode(
                "ascii", "replace").strip() if isinstance(event.move_destination, bytes)
                else str(event.move_destination or "").strip()).first()
            if destination is None:
                yield None, None  # 0xA801: move destination unknown
                return
            _, files = self._retrieval(event, f"C-MOVE to {destination.name}")
        finally:
            connection.close()
        yield destination.host, int(destination.port), {"ae_title": destination.ae_title,
                                                         "contexts": _move_contexts(files or [])}
        if files is None:
            yield 1
            yield STATUS_NOT_AUTHORISED, None
            return
        yield len(files)
        yield from self._send(event, files)
