"""``builtin.ct_body_lungs``: the core's classical CT segmentation, one RTSTRUCT out."""

from __future__ import annotations

from pathlib import Path

from dicomflow.core.segmentation import ct_body_lungs
from dicomflow.processing.processors import ProcessorRequest

NAME = ct_body_lungs.PROCESSOR


def run(request: ProcessorRequest) -> list[Path]:
    request.log("INFO", f"{NAME}: segmenting {len(request.paths)} images")
    written = ct_body_lungs.run(request.paths, request.output_dir, request.parameters, request.template.rois)
    request.log("INFO", f"{NAME}: wrote {len(written)} file(s)")
    return [Path(p) for p in written]
