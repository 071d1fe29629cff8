"""SOP classes dicomflow treats specially, and human names for any SOP class UID."""

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR

RT_PLAN_CLASSES = frozenset({RT_PLAN, RT_ION_PLAN})


def sop_class_name(uid: str) -> str:
    """The standard's name of a SOP class (e.g. 'CT Image Storage'), or the UID itself if unknown."""
    from pydicom.uid import UID  # lazily: commands that never name a SOP class start faster

    name = UID(uid).name
    return name or uid
