"""`dicomflow rt compare A B [--images DIR] --json`: the contract, on structure sets written here."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dicomflow.core.quality.metrics import compare_masks
from dicomflow.core.rules.model import RoiStyle
from dicomflow.core.segmentation.rtstruct import build_rtstruct, write_dataset
from dicomflow.core.segmentation.volume import read_image_series
from dicomflow.testing import synth


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", *args], capture_output=True, text=True, timeout=120)


def _ball(series, centre_mm, radius):
    geometry = series.geometry
    k, r, c = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    points = (geometry.positions[k][..., :] + c[..., None] * geometry.pixel_spacing[1] * geometry.row_dir
              + r[..., None] * geometry.pixel_spacing[0] * geometry.col_dir)
    return np.linalg.norm(points - np.asarray(centre_mm), axis=-1) <= radius


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    info = synth.write_image_series(out / "ct", n_slices=24, rows=64, cols=64, pixel_spacing=(2.0, 2.0),
                                    slice_thickness=2.0, seed="compare")
    series = read_image_series(info.paths)
    auto = {"Heart": _ball(series, (0, 0, 0), 14), "Lung_L": _ball(series, (25, 0, 0), 10),
            "Spleen": _ball(series, (-20, 10, 0), 6)}
    edited = {"Heart": _ball(series, (3, 0, 0), 14), "Lung_L": _ball(series, (25, 0, 0), 10),
              "Liver": _ball(series, (-20, -10, 0), 8)}

    def write(masks, name):
        styles = [(RoiStyle(n.lower(), n, (255, 0, 0), "ORGAN"), m) for n, m in masks.items()]
        return write_dataset(build_rtstruct(series, styles, label=name), out / name)

    return {"images": out / "ct", "a": write(auto, "auto"), "b": write(edited, "edited"), "series": series,
            "auto": auto, "edited": edited}


@pytest.mark.parametrize("with_images", [True, False])
def test_compare_prints_the_contract(pair, with_images):
    args = ["rt", "compare", str(pair["a"]), str(pair["b"]), "--json"]
    if with_images:
        args += ["--images", str(pair["images"])]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    rois = {r["name"]: r for r in document["rois"]}
    assert set(rois) == {"Heart", "Lung_L"}
    assert document["only_in_a"] == ["Spleen"] and document["only_in_b"] == ["Liver"]
    for roi in rois.values():
        assert set(roi) >= {"name", "dice", "jaccard", "hd95_mm", "msd_mm", "surface_dice", "apl_mm"}
    assert rois["Lung_L"]["dice"] == pytest.approx(1.0, abs=1e-6) and rois["Lung_L"]["hd95_mm"] == 0.0
    # the hearts are 3 mm apart: the numbers are those of the masks the structure sets were made from
    geometry = pair["series"].geometry
    direct = compare_masks(pair["auto"]["Heart"], pair["edited"]["Heart"], (geometry.slice_spacing, 2.0, 2.0))
    assert rois["Heart"]["dice"] == pytest.approx(direct.dice, abs=0.04)
    assert 0.5 < rois["Heart"]["dice"] < 0.95
    assert rois["Heart"]["hd95_mm"] == pytest.approx(3.0, abs=2.0)
    assert document["grid"] == ("images" if with_images else "contours")


def test_compare_refuses_what_is_not_a_structure_set(pair):
    done = run_cli("rt", "compare", str(pair["a"]), str(sorted(pair["images"].iterdir())[0]), "--json")
    assert done.returncode != 0
    assert "not an RT Structure Set" in done.stdout + done.stderr
    missing = run_cli("rt", "compare", str(pair["a"]), "/nonexistent.dcm", "--json")
    assert missing.returncode != 0 and "is not a file" in missing.stdout + missing.stderr
