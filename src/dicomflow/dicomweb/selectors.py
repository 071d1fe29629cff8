"""DICOMweb reads: QIDO-RS searches answered from the catalog, WADO-RS instance sets and metadata.

Every read starts from what the user may see (``projects.selectors.visible_*``), narrowed to one
research project's copy under a per-project root. Matching follows PS3.18 §8.3.4 / PS3.4 C.2.2.2:
single value (exact; PatientName case-insensitive), wildcards ``*`` and ``?``, UID lists (``,`` or
``\\``), date ranges ``A-B``, ``A-``, ``-B``. Query keys may be keywords (``PatientID``) or tags
(``00100020``). Attributes the catalog does not hold are ignored with a ``Warning`` (299) header, as
the standard allows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, Q, QuerySet
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from dicomflow.catalog.models import Series
from dicomflow.errors import InputError, NotFoundError
from dicomflow.projects import selectors as visibility

STUDY, SERIES, INSTANCE = "study", "series", "instance"
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1000
SPECIAL = {"limit", "offset", "includefield", "fuzzymatching"}


class QueryError(InputError):
    """A QIDO-RS query parameter cannot be understood (a 400 naming the parameter)."""


# --- DICOM JSON values -----------------------------------------------------------------------------
def _da(value: dt.date | None) -> str | None:
    return value.strftime("%Y%m%d") if value else None


def element(keyword: str, *values) -> tuple[str, dict]:
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    values = [v for v in values if v not in (None, "")]
    item: dict = {"vr": vr}
    if values:
        item["Value"] = [{"Alphabetic": v} for v in values] if vr == "PN" else values
    return f"{tag:08X}", item


# Each attribute: (level it belongs to, how it is read from a row of that level's query).
# Rows: Study (annotated n_series, n_instances; modalities attached), Series (n_instances),
# Instance (select_related series__study__patient, image).
def _study_of(level: str, row):
    return row if level == STUDY else row.study if level == SERIES else row.series.study


def _series_of(level: str, row):
    return row if level == SERIES else row.series


@dataclass(frozen=True)
class Attribute:
    level: str
    read: Callable[[str, object], object]
    default_at: frozenset[str] = field(default_factory=frozenset)  # levels that return it by default


def _study_attr(read, default=(STUDY,)):
    return Attribute(STUDY, lambda level, row: read(_study_of(level, row)), frozenset(default))


def _series_attr(read, default=(SERIES,)):
    return Attribute(SERIES, lambda level, row: read(_series_of(level, row)), frozenset(default))


def _instance_attr(read, default=(INSTANCE,)):
    return Attribute(INSTANCE, lambda level, row: read(row), frozenset(default))


def _image(inst, name):
    try:
        image = inst.image
    except ObjectDoesNotExist:  # no ImageInformation row (RT objects)
        return None
    return getattr(image, name)


ATTRIBUTES: dict[str, Attribute] = {
    "StudyInstanceUID": _study_attr(lambda s: s.study_instance_uid, (STUDY, SERIES, INSTANCE)),
    "StudyDate": _study_attr(lambda s: _da(s.study_date)),
    "StudyTime": _study_attr(lambda s: s.study_time),
    "AccessionNumber": _study_attr(lambda s: s.accession_number),
    "StudyID": _study_attr(lambda s: s.study_id),
    "StudyDescription": _study_attr(lambda s: s.description),
    "ReferringPhysicianName": _study_attr(lambda s: None),
    "PatientName": _study_attr(lambda s: s.patient.patient_name),
    "PatientID": _study_attr(lambda s: s.patient.patient_id),
    "IssuerOfPatientID": _study_attr(lambda s: s.patient.issuer_of_patient_id, ()),
    "PatientBirthDate": _study_attr(lambda s: _da(s.patient.birth_date)),
    "PatientSex": _study_attr(lambda s: s.patient.sex),
    "ModalitiesInStudy": _study_attr(lambda s: getattr(s, "modalities", None)),
    "NumberOfStudyRelatedSeries": _study_attr(lambda s: getattr(s, "n_series", None)),
    "NumberOfStudyRelatedInstances": _study_attr(lambda s: getattr(s, "n_instances", None)),
    "Modality": _series_attr(lambda s: s.modality, (SERIES, INSTANCE)),
    "SeriesInstanceUID": _series_attr(lambda s: s.series_instance_uid, (SERIES, INSTANCE)),
    "SeriesNumber": _series_attr(lambda s: s.series_number),
    "SeriesDescription": _series_attr(lambda s: s.description),
    "SeriesDate": _series_attr(lambda s: _da(s.series_date), ()),
    "BodyPartExamined": _series_attr(lambda s: s.body_part_examined, ()),
    "FrameOfReferenceUID": _series_attr(lambda s: s.frame_of_reference_uid, ()),
    "NumberOfSeriesRelatedInstances": _series_attr(lambda s: getattr(s, "n_instances", None)),
    "SOPClassUID": _instance_attr(lambda i: i.sop_class_uid),
    "SOPInstanceUID": _instance_attr(lambda i: i.sop_instance_uid),
    "InstanceNumber": _instance_attr(lambda i: i.instance_number),
    "AvailableTransferSyntaxUID": _instance_attr(lambda i: i.transfer_syntax_uid),
    "Rows": _instance_attr(lambda i: _image(i, "rows")),
    "Columns": _instance_attr(lambda i: _image(i, "columns")),
    "BitsAllocated": _instance_attr(lambda i: _image(i, "bits_allocated")),
    "NumberOfFrames": _instance_attr(lambda i: _image(i, "number_of_frames")),
}
LEVELS = {STUDY: (STUDY,), SERIES: (STUDY, SERIES), INSTANCE: (STUDY, SERIES, INSTANCE)}
# Where each matchable attribute lives, relative to the level's row.
PATHS = {
    STUDY: {"study": "", "patient": "patient__", "series": "series__"},
    SERIES: {"study": "study__", "patient": "study__patient__", "series": ""},
    INSTANCE: {"study": "series__study__", "patient": "series__study__patient__", "series": "series__"},
}


# --- query parsing -----------------------------------------------------------------------------------
def keyword_of(key: str) -> str:
    """A query key as a DICOM keyword (``00100020`` → ``PatientID``); QueryError for neither."""
    key = key.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        name = keyword_for_tag(int(key, 16))
        if name:
            return name
    elif tag_for_keyword(key) is not None:
        return key
    raise QueryError(f"query parameter '{key[:64]}' is neither a DICOM keyword nor a tag")


@dataclass
class Query:
    level: str
    filters: dict[str, str]
    includes: set[str]
    include_all: bool
    limit: int
    offset: int
    warnings: list[str]


def parse_query(level: str, params: Mapping) -> Query:
    """The QIDO query in ``params`` (a QueryDict or a dict of lists/strings) for ``level``."""
    getlist = params.getlist if hasattr(params, "getlist") else (
        lambda k: params[k] if isinstance(params[k], list) else [params[k]])
    filters, includes, warnings = {}, set(), []
    include_all = False
    limit, offset = DEFAULT_LIMIT, 0
    for key in params:
        values = [str(v) for v in getlist(key)]
        low = key.lower()
        if low == "limit":
            limit = _whole(values[-1], "limit", minimum=1)
            if limit > MAX_LIMIT:
                warnings.append(f"limit lowered to {MAX_LIMIT}")
                limit = MAX_LIMIT
        elif low == "offset":
            offset = _whole(values[-1], "offset", minimum=0)
        elif low == "includefield":
            for value in values:
                for name in value.split(","):
                    if name.strip().lower() == "all":
                        include_all = True
                    elif name.strip():
                        includes.add(keyword_of(name))
        elif low == "fuzzymatching":
            if values[-1].lower() == "true":
                warnings.append("fuzzymatching is not supported; matching is literal")
        elif low in ("_", "format"):  # cache busters some viewers add
            continue
        else:
            name = keyword_of(key)
            filters[name] = values[-1]
    for name in list(filters):
        attr = ATTRIBUTES.get(name)
        if attr is None or name not in MATCHERS or attr.level not in LEVELS[level]:
            warnings.append(f"the following query parameter is not supported and was ignored: {name}")
            filters.pop(name)
    unknown = sorted(n for n in includes if n not in ATTRIBUTES)
    if unknown:
        warnings.append("the catalog holds no value for: " + ", ".join(unknown))
    return Query(level, filters, includes, include_all, limit, offset, warnings)


def _whole(value: str, name: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"parameter {name} must be a whole number") from None
    if number < minimum:
        raise QueryError(f"parameter {name} must be {minimum} or more")
    return number


# --- matching ------------------------------------------------------------------------------------------
def _wild(field: str, value: str, insensitive: bool = False) -> Q:
    """Single value or wildcard matching (``*`` any run, ``?`` one character)."""
    if value in ("*", ""):
        return Q()
    if "*" not in value and "?" not in value:
        return Q(**{f"{field}__iexact" if insensitive else field: value})
    pattern = "^" + "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value) + "$"
    return Q(**{f"{field}__iregex" if insensitive else f"{field}__regex": pattern})


def _uid_list(field: str, value: str) -> Q:
    uids = [u.strip() for u in re.split(r"[,\\]", value) if u.strip()]
    return Q(**{f"{field}__in": uids}) if uids else Q()


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.datetime.strptime(value.strip().replace("-", "") if len(value.strip()) == 10 else value.strip(),
                                    "%Y%m%d").date()
    except ValueError:
        raise QueryError(f"{name} must be a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD") from None


def _date_range(field: str, value: str, name: str) -> Q:
    value = value.strip()
    if "-" in value and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        start, _, end = value.partition("-")
        q = Q()
        if start.strip():
            q &= Q(**{f"{field}__gte": _date(start, name)})
        if end.strip():
            q &= Q(**{f"{field}__lte": _date(end, name)})
        return q
    return Q(**{field: _date(value, name)})


def _int(field: str, value: str, name: str) -> Q:
    values = [v.strip() for v in re.split(r"[,\\]", value) if v.strip()]
    try:
        return Q(**{f"{field}__in": [int(v) for v in values]})
    except ValueError:
        raise QueryError(f"{name} must be a whole number") from None


def _modalities(value: str, level: str) -> Q:
    wanted = [v.strip().upper() for v in re.split(r"[,\\]", value) if v.strip()]
    if not wanted:
        return Q()
    if level == STUDY:
        return Q(pk__in=Series.objects.filter(modality__in=wanted).values("study_id"))
    study_field = "study_id" if level == SERIES else "series__study_id"
    return Q(**{f"{study_field}__in": Series.objects.filter(modality__in=wanted).values("study_id")})


MATCHERS: dict[str, Callable[[str, str, str], Q]] = {
    # name: (level, value) → Q on the row of ``level``
    "StudyInstanceUID": lambda lv, v, n: _uid_list(PATHS[lv]["study"] + "study_instance_uid", v),
    "StudyDate": lambda lv, v, n: _date_range(PATHS[lv]["study"] + "study_date", v, n),
    "AccessionNumber": lambda lv, v, n: _wild(PATHS[lv]["study"] + "accession_number", v),
    "StudyID": lambda lv, v, n: _wild(PATHS[lv]["study"] + "study_id", v),
    "StudyDescription": lambda lv, v, n: _wild(PATHS[lv]["study"] + "description", v, insensitive=True),
    "PatientID": lambda lv, v, n: _wild(PATHS[lv]["patient"] + "patient_id", v),
    "PatientName": lambda lv, v, n: _wild(PATHS[lv]["patient"] + "patient_name", v, insensitive=True),
    "PatientBirthDate": lambda lv, v, n: _date_range(PATHS[lv]["patient"] + "birth_date", v, n),
    "PatientSex": lambda lv, v, n: _wild(PATHS[lv]["patient"] + "sex", v),
    "ModalitiesInStudy": lambda lv, v, n: _modalities(v, lv),
    "Modality": lambda lv, v, n: _uid_list(PATHS[lv]["series"] + "modality", v.upper()),
    "SeriesInstanceUID": lambda lv, v, n: _uid_list(PATHS[lv]["series"] + "series_instance_uid", v),
    "SeriesNumber": lambda lv, v, n: _int(PATHS[lv]["series"] + "series_number", v, n),
    "SeriesDescription": lambda lv, v, n: _wild(PATHS[lv]["series"] + "description", v, insensitive=True),
    "SeriesDate": lambda lv, v, n: _date_range(PATHS[lv]["series"] + "series_date", v, n),
    "BodyPartExamined": lambda lv, v, n: _wild(PATHS[lv]["series"] + "body_part_examined", v),
    "SOPInstanceUID": lambda lv, v, n: _uid_list("sop_instance_uid", v),
    "SOPClassUID": lambda lv, v, n: _uid_list("sop_class_uid", v),
    "InstanceNumber": lambda lv, v, n: _int("instance_number", v, n),
}


# --- scope -------------------------------------------------------------------------------------------
def scoped(user, level: str, project=None) -> QuerySet:
    """What ``user`` may see at ``level``; with ``project``, only that project's copy."""
    if level == STUDY:
        qs = visibility.visible_studies(user)
        return qs.filter(project=project) if project is not None else qs
    if level == SERIES:
        qs = visibility.visible_series(user)
        return qs.filter(project=project) if project is not None else qs
    qs = visibility.visible_instances(user)
    return qs.filter(series__project=project) if project is not None else qs


# --- search --------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    documents: list[dict]
    warnings: list[str]
    more: int  # matches beyond this page (0 when none)


def search(user, level: str, params: Mapping, *, project=None, base_url: str = "",
           study_uid: str | None = None, series_uid: str | None = None) -> SearchResult:
    """QIDO-RS: the matches at ``level`` (within a study / series when given) as DICOM JSON datasets."""
    query = parse_query(level, params)
    qs = scoped(user, level, project)
    if study_uid is not None:
        qs = qs.filter(**{PATHS[level]["study"] + "study_instance_uid": study_uid})
    if series_uid is not None:
        qs = qs.filter(**{PATHS[level]["series"] + "series_instance_uid": series_uid})
    for name, value in query.filters.items():
        if value.strip() not in ("", "*"):  # empty or "*": universal matching (the attribute is returned)
            qs = qs.filter(MATCHERS[name](level, value, name))
    if level == STUDY:
        qs = (qs.select_related("patient")
              .annotate(n_series=Count("series", distinct=True), n_instances=Count("series__instances"))
              .order_by("-study_date", "study_instance_uid"))
    elif level == SERIES:
        qs = (qs.select_related("study", "study__patient").annotate(n_instances=Count("instances"))
              .order_by("study__study_instance_uid", "series_number", "series_instance_uid"))
    else:
        qs = (qs.select_related("series", "series__study", "series__study__patient", "image")
              .order_by("series__series_instance_uid", "instance_number", "sop_instance_uid"))
    rows = list(qs[query.offset:query.offset + query.limit + 1])
    more = 0
    if len(rows) > query.limit:
        rows = rows[:query.limit]
        more = qs.count() - query.offset - query.limit
    if level == STUDY:
        _attach_modalities(rows)
    elif "ModalitiesInStudy" in _returned(query):
        _attach_modalities([_study_of(level, r) for r in rows])
    names = _returned(query)
    return SearchResult([_document(level, row, names, base_url) for row in rows], query.warnings, more)


def _returned(query: Query) -> list[str]:
    levels = LEVELS[query.level]
    names = [n for n, a in ATTRIBUTES.items() if query.level in a.default_at]
    extra = [n for n, a in ATTRIBUTES.items() if a.level in levels and (query.include_all or n in query.includes)]
    # matching keys are returned too (PS3.18 §8.3.4.3)
    extra += [n for n in query.filters if n in ATTRIBUTES]
    return list(dict.fromkeys(names + extra))


def _attach_modalities(studies: list) -> None:
    ids = {s.pk for s in studies}
    found: dict[int, set[str]] = {}
    for study_id, modality in Series.objects.filter(study_id__in=ids).values_list("study_id", "modality").distinct():
        found.setdefault(study_id, set()).add(modality)
    for s in studies:
        s.modalities = sorted(found.get(s.pk, ()))


def _document(level: str, row, names: list[str], base_url: str) -> dict:
    doc = {}
    for name in names:
        value = ATTRIBUTES[name].read(level, row)
        values = value if isinstance(value, list) else [value]
        tag, item = element(name, *values)
        doc[tag] = item
    doc.update([element("RetrieveURL", retrieve_url(level, row, base_url))])
    return dict(sorted(doc.items()))


def retrieve_url(level: str, row, base_url: str) -> str:
    study = _study_of(level, row)
    url = f"{base_url}studies/{study.study_instance_uid}"
    if level in (SERIES, INSTANCE):
        url += f"/series/{_series_of(level, row).series_instance_uid}"
    if level == INSTANCE:
        url += f"/instances/{row.sop_instance_uid}"
    return url


# --- WADO-RS ------------------------------------------------------------------------------------------
@dataclass
class Target:
    """The instances one WADO-RS request names, in order, with what the audit entry says."""

    level: str
    files: list[tuple[str, str, int]]  # (stored path, transfer syntax UID, size)
    obj: str
    projects: set[str]
    clinical: bool


def retrieve_target(user, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
                    *, project=None) -> Target:
    """The instances of a study / series / instance the user may see; NotFoundError when none."""
    qs = scoped(user, INSTANCE, project).filter(series__study__study_instance_uid=study_uid)
    level, label = STUDY, "study"
    if series_uid is not None:
        qs, level, label = qs.filter(series__series_instance_uid=series_uid), SERIES, "series"
    if sop_uid is not None:
        qs, level, label = qs.filter(sop_instance_uid=sop_uid), INSTANCE, "instance"
    rows = list(qs.order_by("series__series_number", "series__series_instance_uid", "instance_number",
                            "sop_instance_uid")
                .values_list("stored_path", "transfer_syntax_uid", "size", "series__project__key", "series__study_id",
                             "series_id", "pk"))
    if not rows:
        raise NotFoundError(f"no such {label} (or you may not see it)")
    first = rows[0]
    pk = {STUDY: first[4], SERIES: first[5], INSTANCE: first[6]}[level]
    return Target(level, [(r[0], r[1], r[2]) for r in rows], f"{label} #{pk}",
                  {r[3] for r in rows if r[3]}, any(r[3] is None for r in rows))


def metadata(target: Target, base_url: str = "") -> Iterator[bytes]:
    """The instances' headers (up to the pixel data) as a DICOM JSON array, one instance at a time."""
    import pydicom

    store = settings.STORE_DIR
    yield b"["
    for index, (path, _ts, _size) in enumerate(target.files):
        ds = pydicom.dcmread(store / path, stop_before_pixels=True)
        doc = ds.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=None)
        yield (b"," if index else b"") + json.dumps(doc, separators=(",", ":")).encode()
    yield b"]"


def frames(target: Target, numbers: list[int]) -> list[bytes]:
    """Frames ``numbers`` (1-based) of one stored instance in a native (uncompressed) transfer syntax,
    as their raw pixel bytes. Compressed instances: NotAcceptableError (no decoding here)."""
    import pydicom

    from dicomflow.errors import NotAcceptableError

    [(path, _ts, _size)] = target.files
    ds = pydicom.dcmread(settings.STORE_DIR / path)
    if "PixelData" not in ds:
        raise NotFoundError("this instance has no pixel data")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise NotAcceptableError("the frames of compressed instances are not served; retrieve the instance")
    bits, rows, cols = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
    if bits % 8:
        raise NotAcceptableError("frames of 1-bit pixel data are not served; retrieve the instance")
    length = rows * cols * int(ds.get("SamplesPerPixel", 1)) * bits // 8
    count = int(ds.get("NumberOfFrames", 1) or 1)
    data = ds.PixelData
    out = []
    for n in numbers:
        if not 1 <= n <= count:
            raise NotFoundError(f"no frame {n}: the instance has {count} frame(s)")
        out.append(bytes(data[(n - 1) * length:n * length]))
    return out
