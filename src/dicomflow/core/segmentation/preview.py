"""Quality-control pictures: a structure set's contours drawn over the CT slices they lie on.

A reviewer approves what they have seen, so the preview is made from the very files the job
produced (the de-identified result and the image series it references), server-side, as PNG:
one slice is decoded at a time (never the whole volume), windowed to 8 bits, and every CLOSED_PLANAR
contour on that slice is drawn as a closed outline in its ROI Display Color.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicomflow.core.segmentation.rtstruct import contour_slices
from dicomflow.core.segmentation.volume import ImageSeries
from dicomflow.errors import DicomReadError, InputError

DEFAULT_WINDOW = (40.0, 400.0)  # soft-tissue window: centre, width (HU)
FALLBACK_COLOURS = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 200, 200)]


@dataclass
class RoiOutline:
    """One ROI's outlines, per slice index: polygons as (rows, cols) pixel coordinates."""

    number: int
    name: str
    colour: tuple[int, int, int]
    polygons: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    @property
    def hex_colour(self) -> str:
        return "#%02x%02x%02x" % self.colour


def _colour(roi: Dataset, index: int) -> tuple[int, int, int]:
    value = roi.get("ROIDisplayColor")
    try:
        r, g, b = (max(0, min(255, int(v))) for v in value)
        return r, g, b
    except (TypeError, ValueError):
        return FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)]


def read_outlines(rtstruct: Dataset | str | Path, series: ImageSeries) -> list[RoiOutline]:
    """Every ROI of the structure set with its contours placed on ``series``' slices.

    Contours referencing an image outside the series raise InputError (the result does not belong
    to this CT); contours without an image reference go to the nearest slice within half a spacing.
    """
    ds = rtstruct if isinstance(rtstruct, Dataset) else pydicom.dcmread(rtstruct, stop_before_pixels=True)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}
    outlines: dict[int, RoiOutline] = {}
    for index, roi in enumerate(ds.get("ROIContourSequence", [])):
        number = int(roi.ReferencedROINumber)
        outlines[id(roi)] = RoiOutline(number, names.get(number, f"ROI {number}"), _colour(roi, index))
    for roi, _name, k, points in contour_slices(ds, series):  # InputError for another CT's contours
        outlines[id(roi)].polygons.setdefault(k, []).append(series.geometry.to_pixel(k, points))
    return list(outlines.values())


def slices_with_contours(outlines: Sequence[RoiOutline]) -> list[int]:
    return sorted({k for o in outlines for k in o.polygons})


def pick_slices(outlines: Sequence[RoiOutline], count: int = 5) -> list[int]:
    """``count`` slice indices spread evenly over the slices that carry contours."""
    have = slices_with_contours(outlines)
    if len(have) <= count:
        return have
    picks = np.linspace(0, len(have) - 1, count).round().astype(int)
    return [have[i] for i in dict.fromkeys(picks.tolist())]


def load_slice(series: ImageSeries, k: int) -> np.ndarray:
    """Slice ``k`` rescaled (HU for CT), decoding only the file (and frame) it lives in."""
    if not 0 <= k < series.geometry.n_slices:
        raise InputError(f"slice {k} is outside the series (0 to {series.geometry.n_slices - 1})")
    file_index, frame = series._frame_of_file[k]
    path = series.paths[file_index]
    try:
        pixels = pydicom.dcmread(path).pixel_array
    except Exception as exc:  # decoders raise many types; report the file, not the details
        raise DicomReadError(f"{path.name}: cannot decode pixel data ({type(exc).__name__})") from None
    plane = pixels[frame] if pixels.ndim == 3 else pixels
    slope, intercept = series.slope_intercept[k]
    return plane.astype(np.float32) * slope + intercept


def _windowed(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    centre, width = window
    low = centre - width / 2
    scaled = (values - low) / max(width, 1.0) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _draw_closed(rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, colour: tuple[int, int, int]) -> None:
    from skimage.draw import line

    height, width = rgb.shape[:2]
    r = np.rint(rows).astype(int)
    c = np.rint(cols).astype(int)
    for i in range(len(r)):
        rr, cc = line(r[i], c[i], r[(i + 1) % len(r)], c[(i + 1) % len(r)])
        inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        rgb[rr[inside], cc[inside]] = colour


def render_slice(series: ImageSeries, k: int, outlines: Sequence[RoiOutline],
                 window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """An (rows, cols, 3) uint8 picture of slice ``k`` with every outline on it drawn."""
    grey = _windowed(load_slice(series, k), window)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    for outline in outlines:
        for rows, cols in outline.polygons.get(k, []):
            _draw_closed(rgb, rows, cols, outline.colour)
    return rgb


def to_png(rgb: np.ndarray, max_size: int = 512) -> bytes:
    """PNG bytes, scaled up (nearest neighbour) so that small matrices stay readable."""
    from PIL import Image

    image = Image.fromarray(rgb, "RGB")
    scale = max(1, max_size // max(rgb.shape[:2]))
    if scale > 1:
        image = image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
