"""Built-in classical segmentation and the bridges external segmenters need.

- :mod:`.volume`: an image series' geometry (oblique-safe) and its voxels;
- :mod:`.masks`: body outline and lungs by thresholds and morphology;
- :mod:`.contours` / :mod:`.rtstruct`: masks ↔ contours ↔ RT Structure Set, ROI restyling;
- :mod:`.nifti`: DICOM series ↔ NIfTI (affine LPS → RAS), label maps back into an RTSTRUCT;
- :mod:`.ct_body_lungs`: the processor ``builtin.ct_body_lungs``.

``PROCESSORS`` maps a template's ``processor`` name to a callable
``(input_paths, output_dir, parameters, rois) -> [written paths]``.
"""

from dicomflow.core.segmentation import ct_body_lungs
from dicomflow.core.segmentation.contours import contours_to_mask, mask_to_contours
from dicomflow.core.segmentation.masks import BodyLungMasks, segment_body_and_lungs
from dicomflow.core.segmentation.rtstruct import (
    apply_roi_styles,
    build_rtstruct,
    read_rtstruct_masks,
    write_dataset,
)
from dicomflow.core.segmentation.volume import ImageSeries, StackGeometry, load_volume, read_image_series

PROCESSORS = {ct_body_lungs.PROCESSOR: ct_body_lungs.run}

__all__ = [
    "PROCESSORS",
    "BodyLungMasks",
    "ImageSeries",
    "StackGeometry",
    "apply_roi_styles",
    "build_rtstruct",
    "contours_to_mask",
    "load_volume",
    "mask_to_contours",
    "read_image_series",
    "read_rtstruct_masks",
    "segment_body_and_lungs",
    "write_dataset",
]
