"""Processor ``builtin.ct_body_lungs``: a CT series in, one RTSTRUCT (body outline and lungs) out.

Parameters (defaults are the built-in template's): ``body_threshold_hu`` (-500),
``lung_threshold_hu`` (-400), ``min_lung_volume_ml`` (5), ``split_lungs`` (true: ``lung_left`` and
``lung_right`` ROIs; false: one ``lungs`` ROI), ``contour_tolerance_px`` (0: exact outline),
``structure_set_label``. ROI names, colours and types come from the template's ``rois`` by key
(``body``, ``lung_left``, ``lung_right``, ``lungs``); a key the template does not style gets the
built-in style. A structure with nothing found is still listed, without contours, so the result
always has the same ROIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomflow.core.rules.builtin import CT_BODY_LUNGS, builtin_templates
from dicomflow.core.rules.model import RoiStyle
from dicomflow.core.segmentation.masks import segment_body_and_lungs
from dicomflow.core.segmentation.rtstruct import build_rtstruct, write_dataset
from dicomflow.core.segmentation.volume import load_volume, read_image_series
from dicomflow.errors import SegmentationError

PROCESSOR = "builtin.ct_body_lungs"


def _defaults() -> tuple[dict[str, Any], dict[str, RoiStyle]]:
    template = builtin_templates()[CT_BODY_LUNGS]
    return dict(template.parameters), {r.key: r for r in template.rois}


def run(
    input_paths: Sequence[str | Path],
    output_dir: str | Path,
    parameters: Mapping[str, Any] | None = None,
    rois: Sequence[RoiStyle] | None = None,
) -> list[Path]:
    """Segment the CT series made of ``input_paths``; write the RTSTRUCT into ``output_dir``."""
    defaults, styles = _defaults()
    params = {**defaults, **(parameters or {})}
    styles.update({r.key: r for r in rois or ()})
    series = read_image_series(input_paths)
    if series.modality != "CT":
        raise SegmentationError(f"{PROCESSOR} needs a CT series; {series.paths[0]} is modality '{series.modality}'")
    hu = load_volume(series)
    masks = segment_body_and_lungs(
        hu,
        series.geometry,
        body_threshold_hu=float(params["body_threshold_hu"]),
        lung_threshold_hu=float(params["lung_threshold_hu"]),
        min_lung_volume_ml=float(params["min_lung_volume_ml"]),
    )
    del hu
    produced = [("body", masks.body)]
    if params.get("split_lungs", True):
        produced += [("lung_left", masks.lung_left), ("lung_right", masks.lung_right)]
    else:
        produced.append(("lungs", masks.lungs))
    dataset = build_rtstruct(
        series,
        [(styles[key], mask) for key, mask in produced],
        label=str(params.get("structure_set_label", "AUTO_BODY_LUNGS")),
        description="Body outline and lungs, classical thresholds and morphology",
        algorithm=PROCESSOR,
        tolerance_px=float(params["contour_tolerance_px"]),
    )
    return [write_dataset(dataset, output_dir)]
