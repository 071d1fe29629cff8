"""A hostile de-identification corpus: real-world-shaped files with unique markers planted in every
place issue 13 lists, written by code (never downloaded).

    python -m dicomflow.testing hostile OUT_DIR          # prints a JSON summary

What is planted (``HostileCorpus.markers`` maps a description to the marker bytes that must never
appear in any released byte; ``short_names`` are two-letter name parts checked word by word):
- elements of known tags encoded as UN: a person name, an unlisted sequence with a name, an
  original Series UID and dates inside, a ReferencedImageSequence (the reference must survive), a
  TextValue and an unlisted DT first seen as UN and later in the same job with their real VR;
- a source preamble carrying a TIFF header and the patient's name; small pixel data, deflate and
  big-endian files (pydicom's own writer runs for them);
- an overlay bitmap in the unused high bits of Pixel Data (60xx attributes, no Overlay Data);
- group 0000 command elements (AE title, affected SOP instance) inside a data set;
- attributes the E.1-1 snapshot lacks: DocumentTitle, HL7InstanceIdentifier, ContentLabel,
  ContentDescription, GraphicLayerDescription, CompletionFlagDescription, BeamName,
  PatientSetupLabel, ToleranceTableLabel, DoseComment, PatientBirthDateInAlternativeCalendar,
  UniversalEntityID and LocalNamespaceEntityID (issuer qualifiers);
- the identity in other forms inside free text: names written together, transliterated
  (Schroedinger for Schrödinger, Wüst for Wuest), two-letter name parts (Wu, Li), the birth date
  as "01 Jan 1801", "1 January 1801", "01.01.1801", "1801-01-01", "01/01/1801", the Patient ID
  with other separators, a Japanese name inside a word;
- two patients sharing a Patient ID with different issuers (both must come back exactly), two
  patients sharing one without issuer (refused), a file without Patient ID (refused);
- a "safe" private attribute holding a name; an RTSTRUCT cut in half; a DICOMDIR;
- a staff name that appears nowhere else, inside ROI names and plan labels
  (``allowlist_markers``: only ``free_text: "allowlist"`` can remove it).
"""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_dataset, write_file_meta_info
from pydicom.sequence import Sequence

from dicomflow.testing import synth

P1 = synth.PatientSpec("HXQ-KZ7-0098", "Schrödinger^Erwin", "M", "18010101")
P1_ISSUER = "HOSPQA"
STAFF = "Wuest^Hanna"  # operator: the transliterated form "Wüst" is planted in text
TWO_LETTER = "Wu^Li"  # referring physician: two-letter name parts
UN_NAME = "Xenakis^Theo"  # a name only ever encoded as UN
NESTED_NAME = "Kowalczyk^Ida"  # inside an unlisted sequence encoded as UN
P2 = synth.PatientSpec("JPQ5501", "Yamada^Tarou=山田^太郎=やまだ^たろう", "M", "19480202")
SHARED_A = synth.PatientSpec("SHRQ01", "Novakova^Petra", "F", "19600303")
SHARED_B = synth.PatientSpec("SHRQ01", "Horvath^Greta", "F", "19700404")
CONFLICT_A = synth.PatientSpec("DUPQ77", "Kimberly^Minna", "F", "19550505")
CONFLICT_B = synth.PatientSpec("DUPQ77", "Parkinson^Jael", "M", "19650606")
ALLOWLIST_STAFF = "Hoffmannsthal"  # appears nowhere but in ROI names and plan labels
UN_DATE = "20110606"
NESTED_DATE = "19990909"
STUDY_UPDATE = "20150707120000"

MARKERS: dict[str, bytes] = {
    "family name (umlaut, UTF-8)": "Schrödinger".encode(),
    "family name transliterated": b"SCHROEDINGER",
    "family name folded": b"SCHRODINGER",
    "given name": b"ERWIN",
    "patient ID part": b"HXQ",
    "patient ID part 2": b"KZ7",
    "issuer": P1_ISSUER.encode(),
    "staff name": b"WUEST",
    "staff name (umlaut)": "Wüst".encode(),
    "staff given name": b"HANNA",
    "UN person name": b"XENAKIS",
    "UN person name given": b"THEO",
    "nested UN name": b"KOWALCZYK",
    "universal entity ID": b"QMARKUEID",
    "local namespace": b"QMARKLNS",
    "alternative calendar birth date": b"QMARKALTCAL",
    "HL7 instance identifier": b"QMARKHL7",
    "AE title in group 0000": b"QMARKAE",
    "preamble text": b"QMARKPREAMBLE",
    "safe private name": b"QMARKSAFEPRIV",
    "Japanese family name": "山田".encode(),
    "Japanese given name": "太郎".encode(),
    "Japanese phonetic": "やまだ".encode(),
    "romanised Japanese name": b"YAMADA",
    "romanised Japanese given": b"TAROU",
    "shared-ID patient A": b"NOVAKOVA",
    "shared-ID patient B": b"HORVATH",
    "shared ID": b"SHRQ01",
    "conflicting patient A": b"KIMBERLY",
    "conflicting patient B": b"PARKINSON",
    "patient without ID": b"NOBODY",
    "TIFF header in preamble": b"II*\x00QMARK",
}
SHORT_NAMES = ("WU", "LI")
ALLOWLIST_MARKERS = {"staff name in ROI names and plan labels": ALLOWLIST_STAFF.upper().encode()}
BIRTH_TEXT = "01 Jan 1801, 1 January 1801, 01.01.1801, 1801-01-01, 01/01/1801"


@dataclass
class HostileCorpus:
    root: Path
    files: list[Path] = field(default_factory=list)
    markers: dict[str, bytes] = field(default_factory=lambda: dict(MARKERS))
    short_names: tuple[str, ...] = SHORT_NAMES
    allowlist_markers: dict[str, bytes] = field(default_factory=lambda: dict(ALLOWLIST_MARKERS))
    # What must happen to particular files (paths inside root).
    truncated: Path | None = None
    cut_at_element: Path | None = None
    dicomdir: Path | None = None
    no_patient_id: Path | None = None
    conflicting: list[Path] = field(default_factory=list)
    shared_id: dict[str, list[Path]] = field(default_factory=dict)  # patient name -> files
    overlay: Path | None = None
    un_reference: tuple[Path, str] | None = None  # (file, referenced original SOP Instance UID)
    safe_private: Path | None = None
    patients: dict[str, synth.PatientSpec] = field(default_factory=dict)
    issuers: dict[str, str] = field(default_factory=dict)  # patient name -> issuer


# -- byte-level writing: UN elements, group 0000, preamble ------------------------------------------

def _implicit_value(elem) -> bytes:
    """The value of ``elem`` as Implicit VR Little Endian bytes (what a UN value holds)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    if elem.VR == "SQ":
        for item in elem.value:
            body = DicomBytesIO()
            body.is_little_endian, body.is_implicit_VR = True, True
            write_dataset(body, item)
            data = body.getvalue()
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data)
        return fp.getvalue()
    write_data_element(fp, elem)
    return fp.getvalue()[8:]


def write_raw(ds: Dataset, path: Path, un: tuple[int, ...] = (), command: list[tuple[int, str, bytes]] = (),
              preamble: bytes | None = None) -> Path:
    """Explicit VR Little Endian file written element by element: tags in ``un`` are encoded as UN,
    ``command`` elements (group 0000) come first, ``preamble`` replaces the zero preamble."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    meta.ImplementationClassUID = synth.PYDICOM_IMPLEMENTATION_UID
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    for tag, vr, value in command:
        if len(value) % 2:
            value += b"\x00" if vr == "UI" else b" "
        body.write(struct.pack("<HH2sH", 0, tag & 0xFFFF, vr.encode(), len(value)) + value)
    for elem in sorted(ds, key=lambda e: int(e.tag)):
        if int(elem.tag) in un:
            value = _implicit_value(elem)
            body.write(struct.pack("<HH2s2xI", elem.tag.group, elem.tag.element, b"UN", len(value)) + value)
        else:
            write_data_element(body, elem, ds._character_set)
    pre = (preamble or b"").ljust(128, b"\x00")[:128]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pre + b"DICM" + head.getvalue() + body.getvalue())
    return path


# -- planting ---------------------------------------------------------------------------------------

def _identity(ds: Dataset, patient: synth.PatientSpec, issuer: str = "") -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient.name, patient.patient_id, patient.birth_date
    if issuer:
        ds.IssuerOfPatientID = issuer


def _plant_p1(ds: Dataset) -> None:
    """Patient 1: every free-text place gets the identity in another form."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.IssuerOfPatientID = P1_ISSUER
    q = Dataset()
    q.UniversalEntityID = "urn:oid:QMARKUEID"
    q.UniversalEntityIDType = "URI"
    q.LocalNamespaceEntityID = "QMARKLNS"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([q])
    ds.PatientBirthDateInAlternativeCalendar = "QMARKALTCAL"
    ds.PatientAlternativeCalendar = "JULIAN"
    ds.OperatorsName = STAFF
    ds.ReferringPhysicianName = TWO_LETTER
    ds.StudyDescription = "Thorax Schroedinger 01 Jan 1801"
    ds.SeriesDescription = "HXQ KZ7 0098 SchroedingerErwin"
    ds.ImageComments = f"seen by Wüst and Wu Li, born {BIRTH_TEXT}"
    ds.StudyUpdateDateTime = STUDY_UPDATE
    for item in ds.get("StructureSetROISequence", []):
        item.ROIName = f"{item.ROIName}_Schroedinger"
        item.ROIDescription = f"drawn by Li for ErwinSchrödinger {ALLOWLIST_STAFF}"
    for item in ds.get("RTROIObservationsSequence", []):
        item.ROIObservationLabel = f"{item.ROIObservationLabel} Wüst"
    if "StructureSetLabel" in ds:
        ds.StructureSetLabel = "RS Wu"
        ds.StructureSetROISequence[0].ROIName = f"PTV_{ALLOWLIST_STAFF}"
    if "RTPlanLabel" in ds:
        ds.RTPlanLabel = f"Plan {ALLOWLIST_STAFF}"[:16]
        ds.RTPlanName = f"Schroedinger {ALLOWLIST_STAFF}"
        for beam in ds.get("BeamSequence", []):
            beam.BeamName = f"{beam.BeamName} Schrödinger"
            beam.BeamDescription = f"for SchroedingerErwin {ALLOWLIST_STAFF}"
        for setup in ds.get("PatientSetupSequence", []):
            setup.PatientSetupLabel = "Setup Wuest"
        for tol in ds.get("ToleranceTableSequence", []):
            tol.ToleranceTableLabel = "Tol Erwin"
    if "DoseComment" in ds:
        ds.DoseComment = "Dose of Schrodinger 1801-01-01"


def _image(tmp: Path, patient: synth.PatientSpec, n: int, seed: int, decorate=None, **kw) -> synth.SeriesInfo:
    return synth.write_image_series(tmp, patient=patient, n_slices=n, rows=16, cols=16, seed=seed,
                                    decorate=decorate, **kw)


def _sr(patient: synth.PatientSpec, study_uid: str, series_uid: str, sop_uid: str, text: str,
        completion: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality = "SR"
    ds.StudyDate = ds.ContentDate = synth.STUDY_DATE
    ds.StudyTime = ds.ContentTime = synth.STUDY_TIME
    ds.SeriesNumber, ds.InstanceNumber = 90, 1
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.CompletionFlagDescription = "signed by Wüst"
    ds.ContinuityOfContent = "SEPARATE"
    ds.TextValue = text
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([title])
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.TextValue = f"Findings for {completion}"
    ds.ContentSequence = Sequence([item])
    observer = Dataset()
    observer.VerifyingObserverName = STAFF
    observer.VerificationDateTime = synth.STUDY_DATE + "120000"
    observer.VerifyingOrganization = "St. Example General Hospital"
    ds.VerifyingObserverSequence = Sequence([observer])
    _identity(ds, patient, P1_ISSUER)
    return ds


def _finish(ds: Dataset, ts: str = "1.2.840.10008.1.2.1") -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = synth.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write_hostile_corpus(out_dir: Path | str, seed: int = 13) -> HostileCorpus:
    """Write the corpus into ``out_dir`` (created); see the module docstring."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    corpus = HostileCorpus(root=root)
    corpus.patients = {p.name: p for p in (P1, P2, SHARED_A, SHARED_B, CONFLICT_A, CONFLICT_B)}
    corpus.issuers = {P1.name: P1_ISSUER, SHARED_A.name: "HOSPQA", SHARED_B.name: "HOSPQB"}

    # 1. Patient 1's RT study (CT, RTSTRUCT, plans, doses, RT image), every free text planted.
    study = synth.write_rt_study(root / "p1", patient=P1, n_slices=4, rows=16, cols=16, with_mr=False,
                                 decorate=_plant_p1, seed=seed)
    ct = sorted(study.ct.paths)

    # 2. Re-encode CT slices byte by byte: UN elements, group 0000, hostile preamble.
    first = dcmread(ct[0])
    first.add_new(0x00081050, "PN", UN_NAME)  # Performing Physician's Name, encoded as UN below
    first.ImageComments = f"{first.ImageComments} with Xenakis Theo"  # words known only from a UN name
    related = Dataset()
    related.StudyInstanceUID = first.StudyInstanceUID
    related.SeriesInstanceUID = first.SeriesInstanceUID
    related.PersonName = NESTED_NAME
    related.ObservationDateTime = NESTED_DATE + "101010"
    related.PurposeOfReferenceCodeSequence = Sequence([])
    first.RelatedSeriesSequence = Sequence([related])  # unlisted sequence
    first.add_new(0x0008041F, "DT", UN_DATE + "120000")  # Study Update DateTime (unlisted DT)
    write_raw(first, ct[0], un=(0x00081050, 0x00081250, 0x0008041F))
    second = dcmread(ct[1])
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    write_raw(second, ct[1], un=(0x00081140,),
              command=[(0x00000002, "UI", str(second.SOPClassUID).encode()),
                       (0x00001000, "UI", str(second.SOPInstanceUID).encode()),
                       (0x00001030, "AE", b"QMARKAE01")],
              preamble=b"II*\x00QMARKPREAMBLE " + "SCHRÖDINGER^ERWIN".encode())
    corpus.un_reference = (ct[1], str(first.SOPInstanceUID))

    # 3. Overlay in the unused high bits of slice 3 (Bits Stored 12, overlay in bit 15).
    third = dcmread(ct[2])
    pixels = third.pixel_array.astype(np.uint16) & 0x0FFF
    pixels[2:6, 2:12] |= 0x8000
    third.PixelData = pixels.tobytes()
    third.add_new(0x60000010, "US", pixels.shape[0])  # Overlay Rows
    third.add_new(0x60000011, "US", pixels.shape[1])  # Overlay Columns
    third.add_new(0x60000040, "CS", "G")  # Overlay Type
    third.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    third.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated
    third.add_new(0x60000102, "US", 15)  # Overlay Bit Position
    third.add_new(0x60000022, "LO", "Schroedinger overlay")
    dcmwrite(ct[2], third, enforce_file_format=True)
    corpus.overlay = ct[2]

    # 4. Slice 4: a safe-private attribute with a name in it (and one with a b-value).
    fourth = dcmread(ct[3])
    block = fourth.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "LO", "QMARKSAFEPRIV")
    block.add_new(0x0D, "IS", "1000")
    dcmwrite(ct[3], fourth, enforce_file_format=True)
    corpus.safe_private = ct[3]

    # 5. A big-endian and a deflated copy of a slice (own SOP Instance UIDs) for patient 1.
    big = dcmread(ct[0])
    big.SOPInstanceUID = synth.UIDGenerator(seed, "big")()
    big.InstanceNumber = 99
    big.ImagePositionPatient = [-0.5, -0.5, 500.0]
    big.PixelData = big.pixel_array.astype(">u2").tobytes()  # big-endian words
    _finish(big, "1.2.840.10008.1.2.2")
    dcmwrite(root / "p1" / "big-endian.dcm", big, enforce_file_format=True)
    deflated = dcmread(ct[0])
    deflated.SOPInstanceUID = synth.UIDGenerator(seed, "deflate")()
    deflated.InstanceNumber = 98
    deflated.ImagePositionPatient = [-0.5, -0.5, 600.0]
    deflated.ImageComments = "deflated for Schroedinger"
    _finish(deflated, "1.2.840.10008.1.2.1.99")
    dcmwrite(root / "p1" / "deflated.dcm", deflated, enforce_file_format=True)

    # 6. SR documents: TextValue and an unlisted DT seen as UN first, then with their real VR.
    uid = synth.UIDGenerator(seed, "hostile")
    sr_series = uid()
    for i, (text, un_tags) in enumerate(
        (("normal", (0x0040A160, 0x0008041F)), ("Schroedinger doing well, DOB 1 January 1801", ()))
    ):
        sr = _sr(P1, study.study_uid, sr_series, uid(), text, "ErwinSchroedinger")
        sr.InstanceNumber = i + 1
        sr.StudyUpdateDateTime = (UN_DATE + "120000") if un_tags else STUDY_UPDATE
        path = root / "p1" / f"sr{i}.dcm"
        if un_tags:
            write_raw(_finish(sr), path, un=un_tags)
        else:
            dcmwrite(path, _finish(sr), enforce_file_format=True)

    # 7. Encapsulated PDF (DocumentTitle, HL7InstanceIdentifier) and a presentation state.
    pdf = Dataset()
    pdf.SpecificCharacterSet = "ISO_IR 192"
    pdf.SOPClassUID, pdf.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.104.1", uid()
    pdf.StudyInstanceUID, pdf.SeriesInstanceUID = study.study_uid, uid()
    pdf.Modality, pdf.SeriesNumber, pdf.InstanceNumber = "DOC", 91, 1
    pdf.ContentDate, pdf.ContentTime, pdf.AcquisitionDateTime = synth.STUDY_DATE, "101500", synth.STUDY_DATE + "101500"
    pdf.DocumentTitle = "Report Schrödinger Erwin"
    pdf.HL7InstanceIdentifier = "QMARKHL7^^^HOSPQA"
    pdf.BurnedInAnnotation = "NO"
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4 Schroedinger Erwin QMARKHL7 %%EOF\n"
    _identity(pdf, P1, P1_ISSUER)
    dcmwrite(root / "p1" / "doc.dcm", _finish(pdf), enforce_file_format=True)
    pr = Dataset()
    pr.SpecificCharacterSet = "ISO_IR 192"
    pr.SOPClassUID, pr.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.11.1", uid()
    pr.StudyInstanceUID, pr.SeriesInstanceUID = study.study_uid, uid()
    pr.Modality, pr.SeriesNumber, pr.InstanceNumber = "PR", 92, 1
    pr.PresentationCreationDate, pr.PresentationCreationTime = synth.STUDY_DATE, "101500"
    pr.ContentLabel = "SCHROEDINGER"
    pr.ContentDescription = "View for Schrödinger"
    pr.ContentCreatorName = STAFF
    layer = Dataset()
    layer.GraphicLayer, layer.GraphicLayerOrder = "LAYER1", 1
    layer.GraphicLayerDescription = "Annotated by Wuest"
    pr.GraphicLayerSequence = Sequence([layer])
    _identity(pr, P1, P1_ISSUER)
    dcmwrite(root / "p1" / "pr.dcm", _finish(pr), enforce_file_format=True)

    # 8. The truncated RTSTRUCT (a copy with its own SOP Instance UID, cut in half).
    rs = dcmread(study.rtstruct.path)
    rs.SOPInstanceUID = uid()
    buf = io.BytesIO()
    dcmwrite(buf, _finish(rs), enforce_file_format=True)
    data = buf.getvalue()
    corpus.truncated = root / "p1" / "rs-truncated.dcm"
    corpus.truncated.write_bytes(data[: len(data) // 2])
    # ...and another copy cut exactly before an element (a shorter, seemingly valid data set).
    rs.SOPInstanceUID = uid()
    buf = io.BytesIO()
    dcmwrite(buf, _finish(rs), enforce_file_format=True)
    data = buf.getvalue()
    corpus.cut_at_element = root / "p1" / "rs-cut-at-element.dcm"
    corpus.cut_at_element.write_bytes(data[: data.index(struct.pack("<HH", 0x3006, 0x0080) + b"SQ")])

    # 9. Patient 2: a Japanese name (three component groups), in free text inside a word.
    def plant_p2(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyDescription = "山田太郎様 thorax"
        ds.SeriesDescription = "CT やまだ chest"

    _image(root / "p2", P2, 2, seed + 2, plant_p2)

    # 10. Two patients sharing a Patient ID with different issuers; two without issuer (conflict).
    for patient, issuer in ((SHARED_A, "HOSPQA"), (SHARED_B, "HOSPQB")):
        info = _image(root / f"shared-{issuer}", patient, 2, seed + len(issuer) + ord(issuer[-1]),
                      lambda ds, i=issuer: setattr(ds, "IssuerOfPatientID", i))
        corpus.shared_id[patient.name] = sorted(info.paths)
    for n, patient in enumerate((CONFLICT_A, CONFLICT_B)):
        info = _image(root / f"conflict-{n}", patient, 1, seed + 40 + n)
        corpus.conflicting += list(info.paths)

    # 11. A file without Patient ID.
    info = _image(root / "no-id", synth.PatientSpec("", "Nobody^Known", "O", "19900101"), 1, seed + 50)
    corpus.no_patient_id = info.paths[0]

    # 12. A DICOMDIR (the referenced copies are not part of the corpus).
    with tempfile.TemporaryDirectory() as tmp:
        synth.write_dicomdir(Path(tmp) / "media", [corpus.shared_id[SHARED_A.name][0]])
        corpus.dicomdir = root / "media" / "DICOMDIR"
        corpus.dicomdir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "media" / "DICOMDIR", corpus.dicomdir)

    corpus.files = sorted(p for p in root.rglob("*") if p.is_file())
    return corpus


# -- values the catalog cannot hold (issue 14) ----------------------------------------------------------

@dataclass
class UncatalogableSet:
    """21 files: ``good`` catalogue, ``bad`` must be ignored with a reason (``reasons``: path -> word)."""

    good: list[Path]
    bad: dict[Path, str]


def write_uncatalogable_set(out_dir: Path | str, seed: int = 21) -> UncatalogableSet:
    """16 good slices (one with NUL in its description, which the catalog drops) and 5 whose UIDs or
    Patient ID no catalog column can hold: 65+ characters, or a NUL inside."""
    import pydicom
    from pydicom import config

    out_dir = Path(out_dir)
    series = synth.write_image_series(out_dir / "src", n_slices=21, rows=16, cols=16, seed=seed)
    long_uid = "1.2.826.0.1.3680043.8.498." + "1" * 40  # 66 characters
    plans = [
        ("SOPInstanceUID", long_uid, "SOP Instance UID"),
        ("SOPInstanceUID", "1.2.3.4\x005.6", "SOP Instance UID"),
        ("PatientID", "P" * 70, "Patient ID"),
        ("PatientID", "PAT\x00001", "Patient ID"),
        ("StudyInstanceUID", long_uid + "7", "Study Instance UID"),
    ]
    good: list[Path] = []
    bad: dict[Path, str] = {}
    previous = (config.settings.reading_validation_mode, config.settings.writing_validation_mode)
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        for index, path in enumerate(series.paths):
            target = out_dir / "files" / f"{index:03d}.dcm"
            ds = pydicom.dcmread(path)
            if index < len(plans):
                keyword, value, reason = plans[index]
                setattr(ds, keyword, value)
                bad[write_raw(ds, target)] = reason
            else:
                if index == len(plans):
                    ds.SeriesDescription = "thorax\x00planning"
                good.append(write_raw(ds, target))
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = previous
    import shutil

    shutil.rmtree(out_dir / "src")
    return UncatalogableSet(good, bad)
