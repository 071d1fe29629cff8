"""Resolve the combined actions of PS3.15 (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) by the attribute's Type.

The standard lets the Type of the attribute in the IOD decide: Type 1 → D (dummy), Type 2 → Z
(zero length), Type 3 → X (remove). This module encodes the Types of the attributes with combined
actions as they occur in the IODs dicomflow handles most (CT, MR, enhanced CT/MR, RT Structure
Set, RT Plan, RT Dose, RT Image, RT treatment records). Where the Type is unknown we assume the
attribute is required — Type 1 if a dummy is allowed, else Type 2 — because removing a required
attribute breaks conformance, while an empty or dummy value is always conformant and carries no
information. ``X/Z/U*`` (reference sequences) always resolves to U: the sequence is kept and its
instance UIDs are replaced, which is conformant for every Type and keeps references usable.
"""

from __future__ import annotations

ENHANCED_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color
    }
)

# Type of the attribute where it occurs in the common IODs (the sequence item it lives in for
# nested ones, e.g. Treatment Machine Name in Beam Sequence).
ATTRIBUTE_TYPES: dict[str, int] = {
    "AcquisitionContextSequence": 3,
    "AcquisitionDate": 3,
    "AcquisitionDateTime": 3,
    "AcquisitionDeviceProcessingDescription": 3,
    "AcquisitionTime": 3,
    "BarcodeValue": 3,
    "ContentCreatorName": 2,
    "ContentDate": 2,
    "ContentTime": 2,
    "ContrastBolusAgent": 2,
    "DateOfLastDetectorCalibration": 3,
    "DetectorID": 3,
    "DeviceSerialNumber": 3,
    "EndAcquisitionDateTime": 3,
    "FirstTreatmentDate": 2,
    "InstanceCreationDate": 3,
    "InstanceCreationTime": 3,
    "InstitutionCodeSequence": 3,
    "InstitutionName": 3,
    "LabelText": 3,
    "MostRecentTreatmentDate": 2,
    "ObservationDateTime": 3,
    "OperatorIdentificationSequence": 3,
    "OperatorsName": 3,
    "PatientID": 2,
    "PatientSexNeutered": 2,
    "ProtocolName": 3,
    "ReferencedPerformedProcedureStepSequence": 3,
    "ReferencedStudySequence": 3,
    "RequestedProcedureDescription": 3,
    "ReviewerName": 2,
    "RTPlanDate": 2,
    "RTPlanTime": 2,
    "SeriesDate": 3,
    "SeriesTime": 3,
    "StartAcquisitionDateTime": 3,
    "StationName": 3,
    "TimeOfLastDetectorCalibration": 3,
    "TreatmentDate": 2,
    "TreatmentMachineName": 2,
    "TreatmentSite": 3,
    "TreatmentTime": 2,
}
ENHANCED_TYPES: dict[str, int] = {
    "AcquisitionContextSequence": 2,
    "AcquisitionDateTime": 1,
    "ContentDate": 1,
    "ContentTime": 1,
    "DeviceSerialNumber": 1,
}
# RT objects use the RT Series module instead of General Series.
RT_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.481."
RT_TYPES: dict[str, int] = {"OperatorsName": 2}


def attribute_type(keyword: str, sop_class_uid: str) -> int | None:
    if sop_class_uid in ENHANCED_CLASSES and keyword in ENHANCED_TYPES:
        return ENHANCED_TYPES[keyword]
    if sop_class_uid.startswith(RT_CLASS_PREFIX) and keyword in RT_TYPES:
        return RT_TYPES[keyword]
    return ATTRIBUTE_TYPES.get(keyword)


def resolve(action: str, keyword: str, sop_class_uid: str) -> str:
    """One of D, Z, X, K, C, U for a possibly combined action."""
    if "/" not in action:
        return action
    if action == "X/Z/U*":
        return "U"
    choices = action.split("/")
    kind = attribute_type(keyword, sop_class_uid)
    if kind is None:
        kind = 1 if "D" in choices else 2
    if kind == 1:
        return "D" if "D" in choices else "Z"
    if kind == 2:
        return "Z" if "Z" in choices else "D"
    return "X" if "X" in choices else ("Z" if "Z" in choices else "D")
