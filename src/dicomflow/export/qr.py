"""Query/Retrieve SCU: C-FIND, C-GET and C-MOVE against a remote DICOM node (a clinical PACS).

- :func:`find` asks at PATIENT, STUDY or SERIES level (Study Root; Patient Root for patients) with
  the usual keys; :func:`find_studies` shapes the study level like ``dicomflow qr find --json``.
- :func:`get` retrieves a study (or some of its series) with C-GET: the node sends the instances
  back over our own association; each data set is streamed to disk by pynetdicom, moved into the
  store unchanged (like the receiver does) and catalogued through one
  :class:`~dicomflow.intake.sessions.ImportSession` — same dedupe, conflicts and reasons as every
  other source, and the session's intake filter applies.
- :func:`move` asks the node to C-STORE the instances to a move destination (by default this
  installation's receiver, ``DICOMFLOW_SCP_AET``), which must be running and known to the node;
  the receiver's import sessions then hold what arrived (:func:`receiver_report` collects them).

Nothing identifying is logged: nodes are named by AE title and address, objects by counts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import StoragePresentationContexts, _config, build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomflow.core.dicom.header import read_header
from dicomflow.core.ingest import StoredFile, store_path_for
from dicomflow.core.store import FileStore
from dicomflow.errors import InputError, NetworkError, StorageError
from dicomflow.export.scu import _associate, _make_ae, as_remote_node
from dicomflow.intake.network.common import RemoteNode, check_ae_title

log = logging.getLogger(__name__)

LEVELS = ("PATIENT", "STUDY", "SERIES")
MAX_MATCHES = 5000  # a C-FIND asking for more is cancelled: narrow the query
PENDING = (0xFF00, 0xFF01)
# Storage SOP classes we accept over a C-GET association: pynetdicom's 120 common ones (CT, MR, PET,
# RT Structure Set/Plan/Dose/Image, secondary capture, ...) — with the Get context 121 of 128.
_GET_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                          "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]


# --- query ----------------------------------------------------------------------------------------------
def dicom_date(text: str | date | None, what: str) -> str:
    """``YYYYMMDD`` from ``YYYY-MM-DD``, ``YYYYMMDD`` or a date; '' for nothing; InputError otherwise."""
    if text is None or text == "":
        return ""
    if isinstance(text, date):
        return text.strftime("%Y%m%d")
    cleaned = str(text).strip().replace("-", "")
    try:
        datetime.strptime(cleaned, "%Y%m%d")
    except ValueError:
        raise InputError(f"{what} must be a date written YYYY-MM-DD or YYYYMMDD") from None
    return cleaned


def date_range(date_from=None, date_to=None) -> str:
    """A DICOM date range (``from-to``, ``from-``, ``-to``) or '' for any date."""
    start, end = dicom_date(date_from, "--date-from"), dicom_date(date_to, "--date-to")
    if start and end and start > end:
        raise InputError("--date-from is after --date-to")
    if not start and not end:
        return ""
    if start == end:
        return start
    return f"{start}-{end}"


@dataclass
class Query:
    """The matching keys of a C-FIND; empty strings match everything."""

    patient_id: str = ""
    patient_name: str = ""  # PN with DICOM wildcards: '*' any characters, '?' one character
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    accession_number: str = ""
    study_uid: str = ""

    def check(self) -> Query:
        for value, what in ((self.patient_id, "patient ID"), (self.patient_name, "name"),
                            (self.modality, "modality"), (self.accession_number, "accession number"),
                            (self.study_uid, "study UID")):
            if value and ("\\" in value or len(value) > 64 or not value.isprintable()):
                raise InputError(f"the {what} to search for must be at most 64 printable characters without '\\'")
        date_range(self.date_from, self.date_to)
        return self


STUDY_RETURN_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "StudyDescription",
                     "AccessionNumber", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                     "NumberOfStudyRelatedInstances")
SERIES_RETURN_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                      "NumberOfSeriesRelatedInstances")
PATIENT_RETURN_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                       "NumberOfPatientRelatedStudies")


def identifier_for(level: str, query: Query) -> Dataset:
    """The C-FIND identifier: the query's keys at ``level`` plus that level's return keys (empty)."""
    level = level.upper()
    if level not in LEVELS:
        raise InputError(f"query level must be one of {', '.join(LEVELS)}")
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    keys = {"PATIENT": PATIENT_RETURN_KEYS, "STUDY": STUDY_RETURN_KEYS, "SERIES": SERIES_RETURN_KEYS}[level]
    for keyword in keys:
        setattr(ds, keyword, "" if keyword not in ("NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
                                                   "NumberOfSeriesRelatedInstances",
                                                   "NumberOfPatientRelatedStudies") else None)
    if query.patient_id:
        ds.PatientID = query.patient_id
    if query.patient_name:
        ds.PatientName = query.patient_name
    if level == "STUDY":
        ds.StudyDate = date_range(query.date_from, query.date_to)
        if query.modality:
            ds.ModalitiesInStudy = query.modality
        if query.accession_number:
            ds.AccessionNumber = query.accession_number
    if level in ("STUDY", "SERIES") and query.study_uid:
        ds.StudyInstanceUID = query.study_uid
    if level == "SERIES" and query.modality:
        ds.Modality = query.modality
    return ds


def _find_on(assoc, identifier: Dataset, model, node: RemoteNode) -> list[Dataset]:
    matches: list[Dataset] = []
    final = None
    for status, found in assoc.send_c_find(identifier, model):
        if "Status" not in status:
            raise NetworkError(f"DICOM node {node} did not answer the C-FIND (timeout or association aborted)")
        code = int(status.Status)
        if code in PENDING:
            if found is not None:
                matches.append(found)
            if len(matches) > MAX_MATCHES:
                assoc.abort()
                raise InputError(f"more than {MAX_MATCHES} matches: narrow the query")
            continue
        final = code
    if final not in (0x0000, None):
        raise NetworkError(f"DICOM node {node} refused the C-FIND (status 0x{final:04X})")
    return matches


def find(node_or_params, level: str, query: Query, *, our_ae_title: str | None = None,
         timeout: float = 30.0) -> list[Dataset]:
    """C-FIND at ``level`` (PATIENT: Patient Root, else Study Root); the matching identifiers."""
    node = as_remote_node(node_or_params, our_ae_title)
    query.check()
    model = (PatientRootQueryRetrieveInformationModelFind if level.upper() == "PATIENT"
             else StudyRootQueryRetrieveInformationModelFind)
    identifier = identifier_for(level, query)
    ae = _make_ae(node, timeout)
    assoc = _associate(ae, node, [build_context(model)])
    try:
        if not any(cx.abstract_syntax == model for cx in assoc.accepted_contexts):
            raise NetworkError(f"DICOM node {node} does not accept C-FIND at this level (Query/Retrieve {level})")
        return _find_on(assoc, identifier, model, node)
    finally:
        if assoc.is_established:
            assoc.release()


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def find_studies(node_or_params, query: Query, *, our_ae_title: str | None = None, timeout: float = 30.0) -> list[dict]:
    """Study-level matches as ``{"study_uid", "patient_id", "study_date", "modalities", "description",
    "series_count"}`` (what ``dicomflow qr find --json`` prints). Where the node does not return
    modalities or series counts, one series-level query per study fills them in."""
    node = as_remote_node(node_or_params, our_ae_title)
    found = find(node, "STUDY", query, timeout=timeout)
    studies = []
    for ds in found:
        uid = _text(ds, "StudyInstanceUID")
        if not uid:
            continue
        modalities = [m for m in _text(ds, "ModalitiesInStudy").split("\\") if m]
        count = _int(ds, "NumberOfStudyRelatedSeries")
        if not modalities or count is None:
            series = find(node, "SERIES", Query(study_uid=uid), timeout=timeout)
            modalities = modalities or sorted({_text(s, "Modality") for s in series if _text(s, "Modality")})
            count = len(series) if count is None else count
        studies.append({
            "study_uid": uid, "patient_id": _text(ds, "PatientID"), "study_date": _iso(_text(ds, "StudyDate")),
            "modalities": sorted(set(modalities)), "description": _text(ds, "StudyDescription"),
            "series_count": count,
        })
    if query.modality:  # nodes that ignore ModalitiesInStudy as a matching key
        wanted = query.modality.upper()
        studies = [s for s in studies if wanted in {m.upper() for m in s["modalities"]}]
    studies.sort(key=lambda s: (s["study_date"] or "", s["study_uid"]), reverse=True)
    return studies


def find_series(node_or_params, study_uid: str, *, our_ae_title: str | None = None, timeout: float = 30.0) -> list[dict]:
    """The series of one study on the node: ``{"series_uid", "modality", "number", "description", "instances"}``."""
    found = find(node_or_params, "SERIES", Query(study_uid=study_uid), our_ae_title=our_ae_title, timeout=timeout)
    rows = [{"series_uid": _text(ds, "SeriesInstanceUID"), "modality": _text(ds, "Modality"),
             "number": _int(ds, "SeriesNumber"), "description": _text(ds, "SeriesDescription"),
             "instances": _int(ds, "NumberOfSeriesRelatedInstances")} for ds in found]
    return sorted((r for r in rows if r["series_uid"]), key=lambda r: (r["number"] is None, r["number"] or 0))


def _iso(dicom: str) -> str:
    if len(dicom) == 8 and dicom.isdigit():
        return f"{dicom[:4]}-{dicom[4:6]}-{dicom[6:]}"
    return dicom


# --- retrieve -------------------------------------------------------------------------------------------
def retrieve_identifier(study_uid: str, series_uids: list[str] | None = None) -> Dataset:
    if not study_uid or "\\" in study_uid or len(study_uid) > 64:
        raise InputError("give the Study Instance UID to retrieve (--study UID)")
    for uid in series_uids or []:
        if not uid or "\\" in uid or len(uid) > 64:
            raise InputError("a series to retrieve must be given by its Series Instance UID")
    ds = Dataset()
    ds.StudyInstanceUID = study_uid
    if series_uids:
        ds.QueryRetrieveLevel = "SERIES"
        ds.SeriesInstanceUID = list(series_uids) if len(series_uids) > 1 else series_uids[0]
    else:
        ds.QueryRetrieveLevel = "STUDY"
    return ds


@dataclass
class Suboperations:
    """The final C-GET/C-MOVE response: status and sub-operation counts."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0

    def take(self, status: Dataset) -> None:
        self.status = int(status.Status)
        self.completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
        self.failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        self.warning = int(status.get("NumberOfWarningSuboperations", 0) or 0)

    @property
    def ok(self) -> bool:
        return self.status in (0x0000, 0xB000)

    def as_dict(self) -> dict:
        return {"status": None if self.status is None else f"0x{self.status:04X}", "completed": self.completed,
                "failed": self.failed, "warning": self.warning}


@dataclass
class Received:
    """What arrived over a C-GET association, before it is catalogued."""

    stored: list[StoredFile] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _store_handler(store: FileStore, received: Received):
    """EVT_C_STORE on our C-GET association: header, then the file moved into the store unchanged."""

    def handle(event) -> int:
        display = f"c-get sub-operation {event.request.MessageID}"
        try:
            path = Path(event.dataset_path)
        except AttributeError:
            with received.lock:
                received.ignored.append((display, "data set was not streamed to disk"))
            return 0xA700
        try:
            header = read_header(path)
        except InputError as exc:
            with received.lock:
                received.ignored.append((display, str(exc)))
            return 0xC000
        from dicomflow.core.dicom.catalogable import refusal
        from dicomflow.intake.network.scp import adopt_received

        problem = refusal(header)  # a value the catalog cannot hold: refused before it is stored
        if problem is not None:
            with received.lock:
                received.ignored.append((display, problem))
            return 0xC000
        try:
            stored = adopt_received(store, path, store_path_for(header))
        except (StorageError, OSError):
            with received.lock:
                received.ignored.append((display, "could not be stored (out of resources)"))
            return 0xA700
        with received.lock:
            received.stored.append(StoredFile(display, header, stored))
        return 0x0000

    return handle


def get(node_or_params, study_uid: str, series_uids: list[str] | None = None, *, store: FileStore,
        our_ae_title: str | None = None, timeout: float = 120.0) -> tuple[Suboperations, Received]:
    """C-GET a study or some of its series into ``store``; returns the final counts and the files.

    The caller catalogues ``Received.stored`` (an ImportSession) in its own thread: the store
    handler runs on the association's thread and touches no database.
    """
    node = as_remote_node(node_or_params, our_ae_title)
    identifier = retrieve_identifier(study_uid, series_uids)
    _config.STORE_RECV_CHUNKED_DATASET = True  # data sets go to disk as they arrive; never decoded
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
    roles = []
    for cx in StoragePresentationContexts:
        contexts.append(build_context(cx.abstract_syntax, _GET_TRANSFER_SYNTAXES))
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    received = Received()
    ae = _make_ae(node, timeout)
    try:
        assoc = ae.associate(node.host, node.port, contexts, ae_title=node.ae_title, max_pdu=0, ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, _store_handler(store, received))])
    except (OSError, ValueError) as exc:
        raise NetworkError(f"cannot reach DICOM node {node} ({exc})") from None
    _check_established(assoc, node)
    result = Suboperations()
    try:
        if not any(cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet for cx in assoc.accepted_contexts):
            raise NetworkError(f"DICOM node {node} does not accept C-GET (Study Root); try --move")
        for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
            if "Status" not in status:
                raise NetworkError(f"DICOM node {node} stopped answering the C-GET (timeout or association aborted)")
            if int(status.Status) not in PENDING:
                result.take(status)
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("C-GET from %s: status %s, %d completed, %d failed, %d warnings", node,
             result.as_dict()["status"], result.completed, result.failed, result.warning)
    return result, received


def _check_established(assoc, node: RemoteNode) -> None:
    from dicomflow.errors import AssociationRejectedError

    if assoc.is_rejected:
        raise AssociationRejectedError(
            f"DICOM node {node} rejected the association (check its AE title and that it allows "
            f"calling AE title {node.our_ae_title} from this host)")
    if not assoc.is_established:
        raise NetworkError(f"no association with DICOM node {node} (not reachable, aborted or timed out)")


def move(node_or_params, study_uid: str, series_uids: list[str] | None = None, *, destination: str,
         our_ae_title: str | None = None, timeout: float = 300.0) -> Suboperations:
    """C-MOVE a study or some of its series to the AE title ``destination`` (our receiver)."""
    node = as_remote_node(node_or_params, our_ae_title)
    destination = check_ae_title(destination, "move destination AE title")
    identifier = retrieve_identifier(study_uid, series_uids)
    ae = _make_ae(node, timeout)
    assoc = _associate(ae, node, [build_context(StudyRootQueryRetrieveInformationModelMove)])
    result = Suboperations()
    try:
        if not any(cx.abstract_syntax == StudyRootQueryRetrieveInformationModelMove for cx in assoc.accepted_contexts):
            raise NetworkError(f"DICOM node {node} does not accept C-MOVE (Study Root)")
        for status, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove):
            if "Status" not in status:
                raise NetworkError(f"DICOM node {node} stopped answering the C-MOVE (timeout or association aborted)")
            if int(status.Status) not in PENDING:
                result.take(status)
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("C-MOVE from %s to %s: status %s, %d completed, %d failed", node, destination,
             result.as_dict()["status"], result.completed, result.failed)
    if result.status == 0xA801:
        raise NetworkError(f"DICOM node {node} does not know the move destination {destination}: add this "
                           "installation's receiver (AE title, host, port) to the node's configuration")
    return result


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
