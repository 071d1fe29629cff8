"""Masks on an image series → an RT Structure Set (pydicom), and back (for verification).

The structure set is a new object (new Study-level links kept, new Series and SOP Instance UIDs)
on the image series' patient and study: the Patient, Patient Study and General Study attributes
are copied from the series, including de-identification markers, so a structure set made on
de-identified images is exactly as de-identified as they are. The reference chain is the one
treatment planning systems read: Referenced Frame of Reference → RT Referenced Study → RT
Referenced Series → Contour Image (every image of the series), and every contour references the
image (and frame, for multi-frame images) it lies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

import dicomflow
from dicomflow.core.dicom.sop import RT_STRUCTURE_SET
from dicomflow.core.rules.model import RoiStyle
from dicomflow.core.segmentation.contours import fill_polygon, mask_to_contours
from dicomflow.core.segmentation.volume import ImageSeries
from dicomflow.errors import InputError

DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # what RT Referenced Study items name

# Patient, Clinical Trial Subject, Patient Study and General Study attributes copied from the images.
_COPIED = (
    "SpecificCharacterSet",
    "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "OtherPatientIDsSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientComments", "PatientSpeciesDescription",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "PatientAge", "PatientSize", "PatientWeight",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator",
)
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator")


def _item(**values) -> Dataset:
    item = Dataset()
    for key, value in values.items():
        setattr(item, key, value)
    return item


def _contour_data(points: np.ndarray) -> RawDataElement:
    """Contour Data (3006,0050) as DS text with 0.001 mm resolution, encoded once.

    Building it raw avoids creating one pydicom DS object per coordinate (seconds for a body
    outline on a full CT); pydicom writes raw elements as they are and decodes them on access.
    """
    texts = ["0" if t in ("-0.000", "0.000") else t for t in map("{:.3f}".format, points.ravel().tolist())]
    data = "\\".join(texts).encode("ascii")
    if len(data) % 2:
        data += b" "
    return RawDataElement(Tag(0x30060050), "DS", len(data), data, 0, False, True, True, False)


def _image_ref(series: ImageSeries, k: int) -> Dataset:
    ref = _item(ReferencedSOPClassUID=series.sop_class_uid, ReferencedSOPInstanceUID=series.sop_instance_uids[k])
    if series.frame_numbers is not None:
        ref.ReferencedFrameNumber = series.frame_numbers[k]
    return ref


def _roi_items(series: ImageSeries, number: int, style: RoiStyle, mask: np.ndarray, for_uid: str,
               algorithm: str, tolerance_px: float) -> tuple[Dataset, Dataset, Dataset]:
    """The Structure Set ROI, ROI Contour and RT ROI Observations items of one ROI from its mask."""
    structure_roi = _item(
        ROINumber=number, ReferencedFrameOfReferenceUID=for_uid, ROIName=style.name,
        ROIGenerationAlgorithm="AUTOMATIC", ROIGenerationDescription=algorithm[:64],
    )
    contour_items = []
    for k, points in mask_to_contours(mask, series.geometry, tolerance_px):
        contour_items.append(_item(
            ContourImageSequence=DicomSequence([_image_ref(series, k)]),
            ContourGeometricType="CLOSED_PLANAR",
            NumberOfContourPoints=len(points),
            ContourNumber=len(contour_items) + 1,
        ))
        contour_items[-1][0x30060050] = _contour_data(points)
        # Mark the item as already encoded (explicit VR little endian) so that writing keeps
        # the raw Contour Data as it is instead of decoding every coordinate.
        contour_items[-1].set_original_encoding(False, True, contour_items[-1]._character_set)
    roi_contour = _item(ROIDisplayColor=[int(c) for c in style.color], ReferencedROINumber=number)
    if contour_items:
        roi_contour.ContourSequence = DicomSequence(contour_items)
    observation = _item(
        ObservationNumber=number, ReferencedROINumber=number, ROIObservationLabel=style.display_label,
        RTROIInterpretedType=style.type, ROIInterpreter="",
    )
    return structure_roi, roi_contour, observation


def append_rois(ds: Dataset, series: ImageSeries, rois: Sequence[tuple[RoiStyle, np.ndarray]],
                algorithm: str = "dicomflow derived", tolerance_px: float = 0.0) -> list[str]:
    """Add ROIs made from masks on ``series`` to an existing structure set, in place (numbers after
    the highest in use; a ROI whose name exists already is refused). Returns the names added."""
    existing = {str(r.ROIName).casefold() for r in ds.get("StructureSetROISequence", [])}
    number = max((int(r.ROINumber) for r in ds.get("StructureSetROISequence", [])), default=0)
    for_uid = str(ds.get("FrameOfReferenceUID", "") or series.frame_of_reference_uid)
    for name in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        if name not in ds:
            setattr(ds, name, DicomSequence([]))
    added = []
    for style, mask in rois:
        if style.name.casefold() in existing:
            raise InputError(f"the structure set has a ROI named '{style.name}' already")
        if mask.shape != series.geometry.shape:
            raise InputError(f"mask of ROI '{style.name}' has shape {mask.shape}, the images {series.geometry.shape}")
        number += 1
        structure_roi, roi_contour, observation = _roi_items(series, number, style, mask, for_uid, algorithm, tolerance_px)
        structure_roi.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
        ds.StructureSetROISequence.append(structure_roi)
        ds.ROIContourSequence.append(roi_contour)
        ds.RTROIObservationsSequence.append(observation)
        existing.add(style.name.casefold())
        added.append(style.name)
    return added


def build_rtstruct(
    series: ImageSeries,
    rois: Sequence[tuple[RoiStyle, np.ndarray]],
    label: str = "AUTO",
    description: str = "",
    algorithm: str = "dicomflow",
    tolerance_px: float = 0.0,
    series_number: int = 901,
    series_description: str = "Autosegmentation",
) -> Dataset:
    """A complete RTSTRUCT dataset (with file meta) for masks on ``series``' grid."""
    for style, mask in rois:
        if mask.shape != series.geometry.shape:
            raise InputError(f"mask of ROI '{style.name}' has shape {mask.shape}, the images {series.geometry.shape}")
    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    source = series.header
    ds = Dataset()
    for keyword in _COPIED:
        if keyword in source:
            ds[keyword] = source[keyword]
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    if not ds.get("FrameOfReferenceUID"):
        raise InputError(f"{series.paths[0]}: the images have no FrameOfReferenceUID; contours cannot be placed")
    sop_uid = generate_uid()
    ds.SOPClassUID = RT_STRUCTURE_SET
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.OperatorsName = ""
    ds.Manufacturer = "dicomflow"
    ds.ManufacturerModelName = algorithm
    ds.SoftwareVersions = getattr(dicomflow, "__version__", "0")
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    if description:
        ds.StructureSetDescription = description
    ds.StructureSetDate, ds.StructureSetTime = date, time
    for_uid = str(ds.FrameOfReferenceUID)
    all_refs = [_image_ref(series, k) for k in range(series.geometry.n_slices)]
    if series.frame_numbers is not None:  # one reference per multi-frame instance is enough here
        all_refs = [_item(ReferencedSOPClassUID=series.sop_class_uid, ReferencedSOPInstanceUID=u)
                    for u in dict.fromkeys(series.sop_instance_uids)]
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_item(
        FrameOfReferenceUID=for_uid,
        RTReferencedStudySequence=DicomSequence([_item(
            ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT,
            ReferencedSOPInstanceUID=str(ds.StudyInstanceUID),
            RTReferencedSeriesSequence=DicomSequence([_item(
                SeriesInstanceUID=series.series_uid, ContourImageSequence=DicomSequence(all_refs))]),
        )]),
    )])
    structure_rois, roi_contours, observations = [], [], []
    for number, (style, mask) in enumerate(rois, start=1):
        structure_roi, roi_contour, observation = _roi_items(series, number, style, mask, for_uid, algorithm, tolerance_px)
        structure_rois.append(structure_roi)
        roi_contours.append(roi_contour)
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def write_dataset(ds: Dataset, out_dir: str | Path) -> Path:
    """Write ``ds`` as ``RS.<SOPInstanceUID>.dcm`` (a name made of UIDs only) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"RS.{ds.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".dcm.part")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path


def _points(contour: Dataset) -> np.ndarray:
    """Contour Data as an (m, 3) array, parsed straight from the raw text when still raw (fast)."""
    element = contour.get_item(0x30060050)
    if isinstance(element, RawDataElement) and element.VR in (None, "DS") and element.value:
        values = np.asarray(element.value.split(b"\\")).astype(float)
    else:
        values = np.asarray([float(v) for v in contour.ContourData], float)
    return values.reshape(-1, 3)


def contour_slices(ds: Dataset, series: ImageSeries):
    """Every CLOSED_PLANAR contour of a structure set placed on ``series``: yields (ROI item of the
    ROI Contour Sequence, ROI name, slice index, points (m, 3)).

    A contour referencing an image outside the series raises InputError; one without an image
    reference goes to the nearest slice within half a spacing (others are not on this grid).
    """
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    slice_of = series.slice_of_reference()
    geometry = series.geometry
    for roi in ds.get("ROIContourSequence", []):
        name = names.get(int(roi.ReferencedROINumber), f"ROI {roi.ReferencedROINumber}")
        for contour in roi.get("ContourSequence", []):
            if contour.get("ContourGeometricType") != "CLOSED_PLANAR":
                continue
            points = _points(contour)
            refs = contour.get("ContourImageSequence")
            if refs:
                ref = refs[0]
                frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
                key = (str(ref.ReferencedSOPInstanceUID), frame)
                if key not in slice_of:
                    raise InputError(f"ROI '{name}': a contour references an image that is not in the series")
                k = slice_of[key]
            else:
                k, distance = geometry.nearest_slice(points)
                if distance > max(geometry.slice_spacing / 2, 0.01):
                    continue  # between slices: not on this grid
            yield roi, name, k, points


def read_rtstruct_masks(rtstruct: Dataset | str | Path, series: ImageSeries) -> dict[str, np.ndarray]:
    """ROI name → mask on ``series``' grid, from the CLOSED_PLANAR contours of a structure set."""
    ds = rtstruct if isinstance(rtstruct, Dataset) else pydicom.dcmread(rtstruct)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    geometry = series.geometry
    masks: dict[str, np.ndarray] = {
        names.get(int(roi.ReferencedROINumber), f"ROI {roi.ReferencedROINumber}"): np.zeros(geometry.shape, bool)
        for roi in ds.get("ROIContourSequence", [])
    }
    for _roi, name, k, points in contour_slices(ds, series):
        rows, cols = geometry.to_pixel(k, points)
        fill_polygon(masks[name][k], rows, cols)
    return masks


def _style_for(name: str, styles: Sequence[RoiStyle]) -> RoiStyle | None:
    folded = name.strip().casefold()
    for style in styles:
        if folded in (style.name.casefold(), style.key.casefold()):
            return style
        if style.label is not None and folded == f"label_{style.label}":
            return style
    return None


def apply_roi_styles(ds: Dataset, styles: Sequence[RoiStyle]) -> list[tuple[str, str]]:
    """Rename, recolour and retype a structure set's ROIs per a template's styles, in place.

    A ROI takes a style when its name equals the style's name or key (case-insensitive), or is
    ``Label_<n>`` for the style's label value (what the NIfTI bridge names unstyled labels).
    ROIs no style matches are left as they are. Returns (old name, new name) per styled ROI.
    """
    changed = []
    styled: dict[int, RoiStyle] = {}
    for roi in ds.get("StructureSetROISequence", []):
        style = _style_for(str(roi.get("ROIName", "")), styles)
        if style is None:
            continue
        changed.append((str(roi.ROIName), style.name))
        roi.ROIName = style.name
        styled[int(roi.ROINumber)] = style
    for contour in ds.get("ROIContourSequence", []):
        style = styled.get(int(contour.ReferencedROINumber))
        if style is not None:
            contour.ROIDisplayColor = [int(c) for c in style.color]
    for observation in ds.get("RTROIObservationsSequence", []):
        style = styled.get(int(observation.ReferencedROINumber))
        if style is not None:
            observation.RTROIInterpretedType = style.type
            observation.ROIObservationLabel = style.display_label
    return changed
