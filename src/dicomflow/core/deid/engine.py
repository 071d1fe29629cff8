"""The PS3.15 de-identification engine for one dataset (pure: no files, no database).

``Deidentifier(key, options).deidentify(ds)`` changes ``ds`` in place and returns what a caller
needs around it: the reverse map entries (new UID → original, pseudonym → identity), the
de-identification record (tag, keyword, action, option — never values), the identifying values
collected for the leak scan, or a quarantine reason (burned-in annotation).

Decisions per attribute, in order:
1. control attributes dicomflow sets itself (Patient Identity Removed...) are reset;
2. Patient's Name / Patient ID become the subject's pseudonym;
3. group lengths are dropped; private attributes are removed unless on the safe-private list
   (Retain Safe Private Option);
4. a row of Table E.1-1 decides (options applied, combined actions resolved by Type, see
   ``iodtypes``);
5. attributes the table does not list are never kept unseen: UIDs are replaced (unless
   registered), dates follow the temporal option, person names get a dummy, free text is cleaned
   (``Clean Descriptors`` rules), binary values are removed; only numbers, code strings, times and
   an explicit allow-list of safe attributes (image pixel module, geometry, codes, device model)
   are kept. Public tags unknown to the data dictionary follow ``Options.unknown_public`` (UN
   values of such tags are always removed: their content cannot be known).
Decisions use the dictionary VR: an element of a known tag encoded as UN is decoded first (a UN
sequence is parsed and walked; removed when it cannot be parsed), and the decision cache is keyed
by tag, VR, mode and SOP class. Group 0000 (command) and group 0002 elements inside the data set
are removed. Sequences are walked at any depth. Large deferred values (Pixel Data) are never read
here.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicomflow.core.deid.clean import DescriptorCleaner
from dicomflow.core.deid.iodtypes import resolve
from dicomflow.core.deid.keys import ProjectKey
from dicomflow.core.deid.options import Options
from dicomflow.core.deid.pseudonyms import Pseudonymizer, is_well_known_uid, shift_da, shift_dt
from dicomflow.core.deid.table import rule_for
from dicomflow.core.deid.values import IdentifyingValues
from dicomflow.errors import InputError

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
PIXEL_DATA = 0x7FE00010
CONTROL_TAGS = frozenset(
    {
        0x00120062,  # Patient Identity Removed
        0x00120063,  # De-identification Method
        0x00120064,  # De-identification Method Code Sequence
        0x00280303,  # Longitudinal Temporal Information Modified
    }
)
# Secondary capture and ultrasound SOP classes: burned-in text is common, quarantine when unstated.
BURNED_IN_SUSPECT_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3.1",
    }
)
# A few attributes of PS3.15 Table E.3.10-1 (safe private), as (creator, group, element byte).
# Extend per project with Options.safe_private.
SAFE_PRIVATE = frozenset(
    {
        ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B value
        ("SIEMENS MR HEADER", 0x0019, 0x0D),  # diffusion directionality
        ("SIEMENS MR HEADER", 0x0019, 0x0E),  # diffusion gradient direction
        ("SIEMENS MR HEADER", 0x0019, 0x27),  # B matrix
        ("GEMS_PARM_01", 0x0043, 0x39),  # b value (slop_int_6..9)
        ("Philips Imaging DD 001", 0x2001, 0x03),  # diffusion b-factor
    }
)
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
FREE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
# In sequences replaced by dummies (D) or cleaned (C) these keep their value: they are codes.
CODE_KEYWORDS = frozenset(
    {
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "ContextIdentifier",
        "MappingResource",
        "MappingResourceName",
        "ValueType",
        "RelationshipType",
        "GraphicType",
    }
)
# Unlisted attributes kept verbatim: numbers, code strings and times carry no free text.
KEPT_UNLISTED_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "DS", "IS", "AT", "UV", "SV", "CS", "TM", "US or SS"})
# Unlisted text or binary attributes known to be safe (structural, device model, codes).
SAFE_UNLISTED = CODE_KEYWORDS | frozenset(
    {
        "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ConvolutionKernel", "RescaleType",
        "WindowCenterWidthExplanation", "PositionReferenceIndicator", "ImplementationVersionName",
        "PixelData", "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths", "LUTData", "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
        "AlphaPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
        "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
        "LargeRedPaletteColorLookupTableData", "LargeGreenPaletteColorLookupTableData",
        "LargeBluePaletteColorLookupTableData", "ICCProfile", "SegmentedPropertyCategoryCodeSequence",
        "CodingSchemeUID", "CodingSchemeName", "CodingSchemeResponsibleOrganization",
        "SourceIsotopeName", "SelectorAttributeName",
        "ContextGroupVersion", "ContextGroupExtensionCreatorUID", "MeasurementUnitsCodeSequence",
    }
)
DUMMY_TEXT = "ANONYMIZED"
DUMMIES = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "DS": "0", "IS": "0", "UR": ""}


@dataclass
class DeidOutcome:
    """Everything the engine learnt about one dataset, as plain picklable data."""

    quarantine_reason: str | None = None
    uid_map: dict[str, str] = field(default_factory=dict)  # new UID -> original UID
    patient: dict | None = None  # reverse record of the patient
    study: dict | None = None  # reverse record of the study (accession number, study ID)
    record: set[tuple[str, str, str, str]] = field(default_factory=set)  # tag, keyword, action, option
    values: IdentifyingValues = field(default_factory=IdentifyingValues)
    shifted_dates: set[str] = field(default_factory=set)  # new YYYYMMDD values this file shifted


class IdentityError(InputError):
    """The patient's identity cannot be pseudonymised without risking a merge of two people."""


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or ""


def _vr_of(tag: int, raw) -> str:
    """The VR a decision is made on: the dictionary's for a public tag read as UN or implicitly."""
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return vr
    if vr == "UN" and tag >> 16 & 1:
        return vr
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _decode_un(ds: Dataset, tag: int, raw):
    """A public element read as UN, converted to its dictionary VR (sequences parsed).

    Returns the converted element, or None when it cannot be decoded (the caller removes it).
    """
    if not (isinstance(raw, RawDataElement) and raw.VR == "UN") or tag >> 16 & 1:
        return raw
    try:
        elem = ds[tag]  # pydicom replaces UN by the dictionary VR (config.replace_un_with_known_vr)
    except Exception:
        return None
    if elem.VR == "UN":
        return None
    return elem


def _is_deferred(raw) -> bool:
    """A large value left on disk by ``defer_size`` (sequences are still read and walked)."""
    if not (isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, 0xFFFFFFFF)):
        return False
    return _vr_of(raw.tag, raw) != "SQ"


def _raw_value(raw, ds: Dataset, tag: int):
    """The value(s) of an element about to be removed, for the leak scan only.

    Raw bytes are decoded directly (UTF-8, else Latin-1) instead of through pydicom's full
    conversion: the text only feeds the identifying-value sets.
    """
    if not isinstance(raw, RawDataElement):
        return raw.value
    data = raw.value or b""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return [v.strip(" \x00") for v in text.split("\\")]


def _ascii(ds: Dataset, tag: int) -> str:
    """Text of an ASCII-only attribute (UI, CS, DA...) straight from its raw bytes."""
    elem = ds._dict.get(tag)
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement) and elem.value is not None:
        return elem.value.decode("latin-1").strip(" \x00")
    return _text(ds, tag)


def _little_endian_implicit(ds: Dataset) -> bool | None:
    """True/False for implicit/explicit VR little endian (as read), None otherwise."""
    meta = getattr(ds, "file_meta", None)
    elem = meta._dict.get(0x00020010) if meta is not None else None
    if elem is None:
        return None
    ts = str(elem.value.decode("ascii") if isinstance(elem.value, bytes) else elem.value).strip(" \x00")
    if ts == "1.2.840.10008.1.2":
        return True
    if ts == "1.2.840.10008.1.2.1" or ts.startswith("1.2.840.10008.1.2.4") or ts == "1.2.840.10008.1.2.5":
        return False
    return None


def _raw_key(ds: Dataset, tag: int):
    """A hashable stand-in for an element's value (its raw bytes when still raw)."""
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    return elem.value if isinstance(elem, RawDataElement) else str(elem.value)


def _text(ds: Dataset, tag: int) -> str:
    """A single value as text by tag ('' when absent or empty), without keyword look-ups."""
    if tag not in ds._dict:
        return ""
    value = ds[tag].value
    if value is None:
        return ""
    if isinstance(value, (list, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


_NUMERIC_TEXT = frozenset(b"0123456789+-.eE\\ \x00")
_NUMERIC_BINARY_VRS = frozenset({"FD", "FL", "SL", "SS", "UL", "US", "SV", "UV", "OF", "OD", "OL", "OV"})
_LETTERS_RUN = re.compile(rb"[A-Za-z]{3,}")


def _safe_private_value(raw) -> bool:
    """A value a safe private attribute (b-values, directions) can hold: numbers, as text or binary.

    Text must be digits, signs, points, exponents, backslashes and padding; a binary value must
    have a numeric VR (or none: implicit VR) and no run of three letters (no hidden text).
    """
    value = raw.value if isinstance(raw, RawDataElement) else None
    if value is None:
        value = getattr(raw, "value", None)
        if isinstance(value, (int, float)) or (isinstance(value, (list, MultiValue)) and all(isinstance(v, (int, float)) for v in value)):
            return True
        if isinstance(value, (list, MultiValue)) and all(isinstance(v, str) for v in value):
            value = "\\".join(value)
        if not isinstance(value, (bytes, str)):
            return False
    data = value.encode("latin-1", "replace") if isinstance(value, str) else bytes(value)
    if set(data) <= _NUMERIC_TEXT:
        return True
    vr = getattr(raw, "VR", None)
    if vr not in (None, "UN", "OB") and vr not in _NUMERIC_BINARY_VRS:
        return False
    return len(data) % 2 == 0 and not _LETTERS_RUN.search(data)


def issuer_of(ds: Dataset) -> str:
    """Issuer of Patient ID, else the Universal/Local Namespace Entity ID of its qualifiers."""
    issuer = _text(ds, 0x00100021).strip()
    if issuer:
        return issuer
    qualifiers = ds.get(0x00100024)
    for item in (qualifiers.value if qualifiers is not None and qualifiers.VR == "SQ" else []) or []:
        for tag in (0x00400032, 0x00400031):  # Universal Entity ID, Local Namespace Entity ID
            text = _text(item, tag).strip()
            if text:
                return text
    return ""


def _values(value) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (list, MultiValue)):
        return list(value)
    return [value]


class Deidentifier:
    """One project's engine: key, options and (optionally) supplied study subject IDs."""

    def __init__(self, key: ProjectKey, options: Options, subject_ids: dict[str, str] | None = None):
        self.options = options
        self.columns = options.active_columns
        self.pseudo = Pseudonymizer(key.secret, options, subject_ids)
        self.safe_private = SAFE_PRIVATE | frozenset(options.safe_private)
        self._decisions: dict[tuple[int, str, str], tuple[str, str]] = {}
        self._codes_raw: dict[bool, tuple[bytes, int]] = {}
        self._patients: dict[tuple, dict] = {}  # same patient, same record: converted once

    # -- decisions -------------------------------------------------------------------------

    def decide(self, tag: int, vr: str, mode: str, sop_class: str) -> tuple[str, str]:
        """(action, deciding option) for a public tag; ``mode`` is normal, dummy or clean."""
        tag = int(tag)  # plain ints hash and compare in C (pydicom's Tag compares in Python)
        cache_key = (tag, vr, mode, sop_class)
        found = self._decisions.get(cache_key)
        if found is None:
            found = self._decide(tag, vr, mode, sop_class)
            self._decisions[cache_key] = found
        return found

    def _decide(self, tag: int, vr: str, mode: str, sop_class: str) -> tuple[str, str]:
        if tag in CONTROL_TAGS:
            return "X", "dicomflow"
        if tag in (PATIENT_NAME, PATIENT_ID):
            return "P", "basic"
        if tag >> 16 in (0x0000, 0x0002):
            return "X", "invalid-group"  # command or file meta elements inside the data set
        if tag & 0xFFFF == 0:
            return "X", "group-length"
        rule = rule_for(tag)
        if rule is not None:
            action, column = rule.action(self.columns)
            return resolve(action, _keyword(tag), sop_class), column
        column = "unlisted"
        if not dictionary_has_tag(tag) and not keyword_for_tag(tag):
            if self.options.unknown_public == "remove" or vr == "UN":
                return "X", "unknown-public"
            column = "unknown-public"
        keyword = _keyword(tag)
        if vr == "UI":
            return ("K", "rtnUIDsOpt") if self.options.retain_uids else ("U", column)
        if vr in ("DA", "DT"):
            if self.options.retain_long_full_dates:
                return "K", "rtnLongFullDatesOpt"
            if self.options.retain_long_modified_dates:
                return "C", "rtnLongModifDatesOpt"
            return "X", column
        if vr == "PN":
            return "D", column
        if vr == "SQ":
            return "K", column  # walked: its items are decided element by element
        if vr in KEPT_UNLISTED_VRS or keyword in SAFE_UNLISTED:
            return "K", column
        if vr == "AS":
            return "X", column
        if vr in FREE_TEXT_VRS or vr in ("AE", "UR"):
            return ("D" if mode == "dummy" else "C"), column
        return "X", column  # binary or unknown content: cannot be cleaned

    # -- the walk --------------------------------------------------------------------------

    def deidentify(self, ds: Dataset) -> DeidOutcome:
        """De-identify ``ds`` in place (file meta included)."""
        out = DeidOutcome()
        burned = _ascii(ds, 0x00280301).upper()  # Burned In Annotation
        sop_class = _ascii(ds, 0x00080016)
        if not self.options.allow_burned_in:
            if burned == "YES":
                out.quarantine_reason = "Burned In Annotation is YES (pixel data may show identity)"
                return out
            if not burned and (sop_class in BURNED_IN_SUSPECT_CLASSES or _ascii(ds, 0x00080060) == "US"):
                out.quarantine_reason = (
                    "secondary capture or ultrasound without Burned In Annotation (pixel data may show identity)"
                )
                return out

        patient_id = _text(ds, PATIENT_ID).strip()
        if not patient_id:
            raise IdentityError(
                "Patient ID is empty: refused, as patients without an ID cannot be told apart "
                "(give every patient an ID before de-identification)"
            )
        issuer = issuer_of(ds)
        pseudonym = self.pseudo.patient_pseudonym(patient_id, issuer)
        offset = self.pseudo.date_offset(patient_id, issuer) if self.options.retain_long_modified_dates else 0
        key = (patient_id, issuer, _raw_key(ds, PATIENT_NAME), _raw_key(ds, 0x00100030), _raw_key(ds, 0x00100040))
        patient = self._patients.get(key)
        if patient is None:
            patient = {
                "kind": "patient",
                "pseudonym": pseudonym,
                "patient_id": patient_id,
                "issuer": issuer,
                "patient_name": _text(ds, PATIENT_NAME),
                "birth_date": _text(ds, 0x00100030),
                "sex": _text(ds, 0x00100040),
                "date_offset_days": offset,
            }
            if len(self._patients) < 10000:
                self._patients[key] = patient
        out.patient = dict(patient)
        study = {
            "accession_number": _text(ds, 0x00080050),
            "study_id": _text(ds, 0x00200010),
        }
        original_study_uid = _ascii(ds, 0x0020000D)

        state = _State(out, sop_class, offset, pseudonym, _little_endian_implicit(ds))
        self._walk(ds, state, "normal")
        # Descriptors are cleaned last: by then every name part and ID of the object (wherever
        # it sits in tag order) has been collected.
        if state.pending:
            values = out.values
            cleaner = DescriptorCleaner(values.tokens, values.ids, values.scripts,
                                        allowlist=self.options.free_text == "allowlist")
            for elem in state.pending:
                new = [cleaner.clean(str(v)) for v in _values(elem.value)]
                if elem.VR == "CS":
                    new = [v.upper()[:16] for v in new]
                elem.value = new if len(new) != 1 else new[0]
        self._finish(ds, state)
        self._rewrite_meta(ds, state)
        if original_study_uid:
            out.study = {"kind": "study", "uid": _ascii(ds, 0x0020000D), **study}
        return out

    def _collect_words(self, ds: Dataset, values: IdentifyingValues, sop_class: str) -> None:
        """Name parts and IDs inside a sequence that is removed or emptied (for the cleaner)."""
        for tag in list(ds._dict):
            raw = ds._dict[tag]  # as stored: raw, deferred or converted
            if _is_deferred(raw):
                continue
            vr = _vr_of(tag, raw)
            if vr == "SQ":
                for item in ds[tag].value or []:
                    self._collect_words(item, values, sop_class)
                continue
            if vr not in ("PN", "LO", "SH", "UC", "LT", "ST") or tag & 0xFFFF == 0:
                continue
            if tag >> 16 & 1:
                if vr == "PN":
                    for v in _values(ds[tag].value):
                        values.add_name(str(v))
                continue
            action, _ = self.decide(tag, vr, "normal", sop_class)
            if action == "K":
                continue
            keyword = _keyword(tag)
            for v in _values(ds[tag].value):
                if vr == "PN":
                    values.add_name(str(v))
                elif keyword.endswith(("ID", "IDs", "Number", "Numbers", "Identifier")):
                    values.add_id(str(v))

    def _walk(self, ds: Dataset, st: _State, mode: str) -> None:
        self._private(ds, st)
        for tag in list(ds._dict):
            if tag >> 16 & 1:
                continue
            raw = ds._dict[tag]  # as stored: raw, deferred or converted
            if getattr(raw, "VR", None) == "UN" and tag >> 16 not in (0, 2):
                raw = _decode_un(ds, tag, raw)
                if raw is None:
                    del ds[tag]
                    st.note(tag, "X", "undecodable-UN")
                    continue
            vr = _vr_of(tag, raw)
            action, column = self.decide(tag, vr, mode, st.sop_class)
            if action == "K" and vr != "SQ":
                continue  # untouched: never converted, written back as read
            if action == "X" and vr != "SQ":
                if vr in STRING_VRS and not _is_deferred(raw):
                    for v in _values(_raw_value(raw, ds, tag)):
                        if not (vr == "UI" and is_well_known_uid(str(v))):
                            st.out.values.collect(_keyword(tag), vr, str(v))
                del ds[tag]
                st.note(tag, action, column)
                continue
            if vr != "SQ" and " or " not in vr and not _is_deferred(raw) and (action != "C" or vr in ("DA", "DT", "TM")):
                self._replace(ds, tag, vr, raw, action, column, st)
                continue
            self._apply(ds, tag, vr, action, column, st, mode)

    def _replace(self, ds: Dataset, tag: int, vr: str, raw, action: str, column: str, st: _State) -> None:
        """Replace a plain value from its raw bytes (no pydicom conversion of the old value).

        Text cleaning is not done here: it needs the character set, so it goes through pydicom.
        """
        st.note(tag, action, column)
        if action == "C" and vr == "TM":
            return  # times are kept when dates are shifted
        old = [str(v) for v in _values(_raw_value(raw, ds, tag)) if v] if vr in STRING_VRS else []
        keyword = _keyword(tag)
        for v in old:
            if not (vr == "UI" and is_well_known_uid(v)):
                st.out.values.collect(keyword, vr, v)
        if action == "P":
            new = st.pseudonym
        elif action == "Z":
            new = "" if vr in STRING_VRS else (b"" if vr in BINARY_VRS else None)
        elif action == "U" or (action == "D" and vr == "UI"):
            if vr != "UI":
                del ds[tag]
                return
            mapped = [v if is_well_known_uid(v) else self._map_uid(v, st.out) for v in old]
            new = mapped if len(mapped) != 1 else mapped[0]
        elif action == "D":
            if vr in DUMMIES:
                new = DUMMIES[vr]
            elif vr in STRING_VRS:
                new = DUMMY_TEXT
            elif vr in BINARY_VRS:
                new = b"\x00\x00"
            else:
                new = 0
        elif action == "C" and vr in ("DA", "DT"):
            shift = shift_da if vr == "DA" else shift_dt
            shifted = [x for x in (shift(v, st.offset) for v in old) if x]
            st.out.shifted_dates.update(x[:8] for x in shifted)
            new = (shifted if len(shifted) != 1 else shifted[0]) if shifted else ""
        else:  # any other action on a plain value: remove, the safe side
            del ds[tag]
            return
        if st.encoding is not None and vr in STRING_VRS:
            text = new if isinstance(new, str) else "\\".join(new) if isinstance(new, list) else None
            if text is not None and text.isascii():
                # Stored encoded, as if read from the file: the writer copies the bytes.
                data = text.encode("ascii")
                if len(data) % 2:
                    data += b"\x00" if vr == "UI" else b" "
                implicit = st.encoding
                ds._dict[tag] = RawDataElement(tag, None if implicit else vr, len(data), data, 0, implicit, True, True, False)
                return
        ds[tag] = DataElement(tag, vr, new)

    def _apply(self, ds: Dataset, tag: int, vr: str, action: str, column: str, st: _State, mode: str) -> None:
        elem = ds[tag]
        vr = elem.VR
        keyword = elem.keyword
        if vr == "SQ":
            if action in ("X", "Z"):
                for item in elem.value or []:
                    self._collect_words(item, st.out.values, st.sop_class)
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = Sequence([])
            else:
                sub = {"D": "dummy", "C": "clean"}.get(action, mode)
                for item in elem.value or []:
                    self._walk(item, st, sub)
            if action != "K":
                st.note(tag, action, column)
            return
        if action == "K":
            return
        st.note(tag, action, column)
        value = elem.value
        if action != "C" or vr in ("DA", "DT"):
            if vr in STRING_VRS or vr == "PN":
                for v in _values(value):
                    if not (vr == "UI" and (action == "U" or action == "D") and is_well_known_uid(str(v))):
                        st.out.values.collect(keyword, vr, str(v))
        if action == "X":
            del ds[tag]
        elif action == "P":
            ds[tag] = DataElement(tag, vr, st.pseudonym)
        elif action == "Z":
            elem.value = "" if vr in STRING_VRS or vr == "PN" else (b"" if vr in BINARY_VRS else None)
        elif action == "U" or (action == "D" and vr == "UI"):
            if vr != "UI":
                del ds[tag]
                return
            new = [v if is_well_known_uid(str(v)) else self._map_uid(str(v), st.out) for v in _values(value)]
            elem.value = new if len(new) != 1 else new[0]
        elif action == "D":
            self._dummy(ds, tag, vr, elem)
        elif action == "C":
            self._clean(ds, tag, vr, elem, st)

    def _dummy(self, ds: Dataset, tag: int, vr: str, elem: DataElement) -> None:
        if vr in DUMMIES:
            elem.value = DUMMIES[vr]
        elif vr in STRING_VRS or vr == "PN":
            elem.value = DUMMY_TEXT
        elif vr in BINARY_VRS:
            elem.value = b"\x00\x00"
        else:
            elem.value = 0

    def _clean(self, ds: Dataset, tag: int, vr: str, elem: DataElement, st: _State) -> None:
        if vr == "DA" or vr == "DT":
            shift = shift_da if vr == "DA" else shift_dt
            new = [shift(str(v), st.offset) for v in _values(elem.value)]
            new = [v for v in new if v]
            st.out.shifted_dates.update(v[:8] for v in new)
            elem.value = (new if len(new) != 1 else new[0]) if new else ""
        elif vr == "TM":
            return  # times are kept when dates are shifted
        elif vr in FREE_TEXT_VRS or vr in ("CS", "AE", "UR"):
            if vr == "PN":
                elem.value = DUMMY_TEXT
                return
            st.pending.append(elem)
        else:
            del ds[tag]  # binary content cannot be cleaned safely: remove it

    def _private(self, ds: Dataset, st: _State) -> None:
        private = [t for t in ds.keys() if t >> 16 & 1]
        if not private:
            return
        keep: set[int] = set()
        if self.options.retain_safe_private:
            creators = {}
            for t in private:
                if 0x10 <= t & 0xFFFF <= 0xFF:
                    creators[(t >> 16, t & 0xFF)] = str(ds[t].value or "").strip()
            for t in private:
                element = t & 0xFFFF
                if element > 0xFF:
                    creator = creators.get((t >> 16, element >> 8))
                    if creator and (creator, t >> 16, element & 0xFF) in self.safe_private:
                        keep.add(t)
                        keep.add((t & 0xFFFF0000) | (element >> 8))
        for t in private:
            if t in keep and t & 0xFFFF > 0xFF and not _safe_private_value(ds._dict[t]):
                keep.discard(t)  # a "safe" attribute must hold what it is known to hold: numbers
        for t in private:
            if t in keep:
                if t & 0xFFFF > 0xFF:
                    st.note(t, "K", "rtnSafePrivOpt")
                continue
            raw = ds.get_item(t, keep_deferred=True)
            if not _is_deferred(raw) and _vr_of(t, raw) == "PN":
                for v in _values(ds[t].value):
                    st.out.values.add_name(str(v))
            del ds[t]
            st.note(t, "X", "basic", private=True)

    def _finish(self, ds: Dataset, st: _State) -> None:
        """Set the attributes that say what was done (PS3.15 E.1.1 and C.7.1.1)."""
        ds.add_new(0x00120062, "CS", "YES")  # Patient Identity Removed
        ds.add_new(0x00120063, "LO", self.options.method_description())
        raw = self._encoded_codes(ds)
        if raw is not None:
            ds[0x00120064] = raw  # pre-encoded once: copied as bytes by the writer
        else:
            ds.add_new(0x00120064, "SQ", self._code_items())
        if self.options.retain_long_full_dates:
            temporal = "UNMODIFIED"
        elif self.options.retain_long_modified_dates:
            temporal = "MODIFIED"
        else:
            temporal = "REMOVED"
        ds.add_new(0x00280303, "CS", temporal)  # Longitudinal Temporal Information Modified
        for tag in (PATIENT_NAME, PATIENT_ID):
            if tag not in ds:
                ds.add_new(tag, "PN" if tag == PATIENT_NAME else "LO", st.pseudonym)

    def _code_items(self) -> list[Dataset]:
        codes = []
        for value, meaning in self.options.method_codes():
            item = Dataset()
            item.add_new(0x00080100, "SH", value)
            item.add_new(0x00080102, "SH", "DCM")
            item.add_new(0x00080104, "LO", meaning)
            codes.append(item)
        return codes

    def _encoded_codes(self, ds: Dataset) -> RawDataElement | None:
        """De-identification Method Code Sequence encoded once per transfer syntax."""
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        implicit = ts == "1.2.840.10008.1.2"
        if not implicit and ts not in ("1.2.840.10008.1.2.1",) and not ts.startswith("1.2.840.10008.1.2.4"):
            return None
        cached = self._codes_raw.get(implicit)
        if cached is None:
            from pydicom.filebase import DicomBytesIO
            from pydicom.filewriter import write_data_element

            fp = DicomBytesIO()
            fp.is_little_endian, fp.is_implicit_VR = True, implicit
            write_data_element(fp, DataElement(0x00120064, "SQ", self._code_items()))
            value = fp.getvalue()[8 if implicit else 12 :]
            cached = (value, len(value))
            self._codes_raw[implicit] = cached
        value, length = cached
        return RawDataElement(
            BaseTag(0x00120064), None if implicit else "SQ", length, value, 0, implicit, True, True, False
        )

    def _rewrite_meta(self, ds: Dataset, st: _State) -> None:
        from pydicom.dataset import FileMetaDataset

        old = getattr(ds, "file_meta", None) or FileMetaDataset()
        meta = FileMetaDataset()
        meta.add_new(0x00020001, "OB", b"\x00\x01")
        meta.add_new(0x00020002, "UI", _ascii(ds, 0x00080016) or _ascii(old, 0x00020002))
        meta.add_new(0x00020003, "UI", _ascii(ds, 0x00080018))
        old_sop = _ascii(old, 0x00020003)
        if old_sop and not is_well_known_uid(old_sop):
            if not self.options.retain_uids:
                st.out.values.uids.add(old_sop)
        meta.add_new(0x00020010, "UI", _ascii(old, 0x00020010) or "1.2.840.10008.1.2")
        meta.add_new(0x00020012, "UI", IMPLEMENTATION_CLASS_UID)
        meta.add_new(0x00020013, "SH", IMPLEMENTATION_VERSION)
        for t in old.keys():
            if t not in (0x00020001, 0x00020002, 0x00020010, 0x00020000):
                if t == 0x00020003:
                    st.note(t, "U", "basic")
                elif t in (0x00020012, 0x00020013):
                    st.note(t, "D", "dicomflow")  # our implementation wrote the file
                else:
                    st.note(t, "X", "basic")
        ds.file_meta = meta

    def _map_uid(self, uid: str, out: DeidOutcome) -> str:
        new = self.pseudo.uid(uid)
        out.uid_map[new] = uid
        return new


class _State:
    """Per-dataset working state of one walk."""

    __slots__ = ("out", "sop_class", "offset", "pseudonym", "pending", "encoding")

    def __init__(self, out: DeidOutcome, sop_class: str, offset: int, pseudonym: str, encoding: bool | None):
        self.out = out
        self.sop_class = sop_class
        self.offset = offset
        self.pseudonym = pseudonym
        # True implicit VR / False explicit VR little endian: new plain values may be stored
        # pre-encoded; None (big endian, no file meta): always through pydicom.
        self.encoding = encoding
        self.pending: list[DataElement] = []  # text elements to clean once all words are known

    def note(self, tag: int, action: str, column: str, private: bool = False) -> None:
        key = (int(tag), action, column, private)
        row = _ROWS.get(key)
        if row is None:
            if private:
                text = f"({tag >> 16:04X},xx{tag & 0xFF:02X})" if tag & 0xFFFF > 0xFF else tag_text(tag)
                row = (text, "", action, column)
            else:
                row = (tag_text(tag), _keyword(tag), action, column)
            if len(_ROWS) < 100000:
                _ROWS[key] = row
        self.out.record.add(row)


_ROWS: dict[tuple, tuple[str, str, str, str]] = {}  # record rows, built once per process


# A fixed UUID-derived UID (PS3.5 B.2) naming dicomflow as the writer of the file.
IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://dicomflow/implementation").int)
IMPLEMENTATION_VERSION = "DICOMFLOW_01"
