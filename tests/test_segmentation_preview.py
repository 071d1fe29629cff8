"""QC preview: the structure set's contours drawn in their colours over the CT slices they lie on."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from dicomflow.core.segmentation import read_image_series
from dicomflow.core.segmentation.preview import pick_slices, read_outlines, render_slice, to_png
from dicomflow.errors import InputError
from dicomflow.testing import synth


@pytest.fixture
def study(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=10, rows=48, cols=48)
    rt = synth.write_rtstruct(tmp_path / "rs", ct)
    return ct, rt


def test_outlines_are_drawn_in_the_roi_colour_on_the_slices_they_lie_on(study):
    ct, rt = study
    series = read_image_series(ct.paths)
    outlines = read_outlines(rt.path, series)
    ds = pydicom.dcmread(rt.path)
    assert [o.name for o in outlines] == [str(r.ROIName) for r in ds.StructureSetROISequence]
    picked = pick_slices(outlines, count=3)
    assert 1 <= len(picked) <= 3 and all(any(k in o.polygons for o in outlines) for k in picked)
    k = picked[len(picked) // 2]
    rgb = render_slice(series, k, outlines)
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8
    drawn = [o for o in outlines if k in o.polygons]
    for outline in drawn:
        hits = np.all(rgb == np.array(outline.colour, np.uint8), axis=2)
        assert hits.sum() >= 4, f"{outline.name} is not drawn"
    plain = render_slice(series, k, [])
    assert (plain[:, :, 0] == plain[:, :, 1]).all()  # without outlines: grey only
    assert plain.std() > 0  # the CT itself is visible, not a blank frame


def test_png_is_a_real_picture_scaled_for_the_screen(study):
    ct, rt = study
    series = read_image_series(ct.paths)
    outlines = read_outlines(rt.path, series)
    png = to_png(render_slice(series, pick_slices(outlines, 1)[0], outlines), max_size=200)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (192, 192)  # 48 px × 4


def test_a_structure_set_of_another_ct_is_refused(study, tmp_path):
    ct, rt = study
    other = synth.write_image_series(tmp_path / "other", n_slices=10, rows=48, cols=48)
    with pytest.raises(InputError, match="not in the series"):
        read_outlines(rt.path, read_image_series(other.paths))
