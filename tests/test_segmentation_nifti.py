"""NIfTI bridge: DICOM series ↔ NIfTI with the right affine (axial and oblique), labels → RTSTRUCT."""

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicomflow.core.rules import RoiStyle
from dicomflow.core.segmentation import load_volume, read_image_series, read_rtstruct_masks
from dicomflow.core.segmentation.nifti import (
    affine_ras,
    labels_to_nifti,
    nifti_labels_to_rtstruct,
    nifti_to_labels,
    series_to_nifti,
)
from dicomflow.errors import InputError
from dicomflow.testing import synth

ORIENTATIONS = {"axial": synth.AXIAL, "oblique": synth.oblique_orientation(25), "coronal": synth.CORONAL}


def lps_to_ras(point):
    return np.array([-point[0], -point[1], point[2]])


def phantom_labels(ct):
    """Ground-truth label map (slice, row, col): 1 body, 2 left lung, 3 right lung."""
    truth = synth.phantom_masks(ct)
    geometry = read_image_series(ct.paths).geometry
    labels = truth.body.astype(np.uint8)
    for k in range(labels.shape[0]):
        left = geometry.patient_x(k) > 0
        labels[k][truth.lungs[k] & left] = 2
        labels[k][truth.lungs[k] & ~left] = 3
    return labels


@pytest.fixture(params=sorted(ORIENTATIONS), scope="module")
def ct(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return synth.write_image_series(
        out / "ct", n_slices=14, rows=28, cols=24, orientation=ORIENTATIONS[request.param], slice_thickness=3.0
    )


def test_series_to_nifti_affine_and_voxels(ct, tmp_path):
    path = series_to_nifti(ct.paths, tmp_path / "ct.nii.gz")
    image = nib.load(path)
    series = read_image_series(ct.paths)
    assert image.shape == (24, 28, 14)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
    affine = image.affine
    # voxel (0,0,0) is the first slice's ImagePositionPatient, (0,0,n-1) the last one's (in RAS)
    assert np.allclose(affine @ [0, 0, 0, 1], [*lps_to_ras(ct.positions[0]), 1], atol=1e-3)
    assert np.allclose(affine @ [0, 0, 13, 1], [*lps_to_ras(ct.positions[-1]), 1], atol=1e-3)
    # any voxel: the generator's own geometry says where pixel (row j, column i) of slice k is
    for i, j, k in [(5, 0, 0), (0, 7, 3), (23, 27, 13), (11, 13, 6)]:
        expected = ct.geometry.to_patient(k, j, i)
        assert np.allclose(affine @ [i, j, k, 1], [*lps_to_ras(expected), 1], atol=1e-3)
    data = np.asanyarray(image.dataobj)
    hu = load_volume(series)
    assert data.dtype == np.int16
    assert np.array_equal(data, hu.transpose(2, 1, 0))
    assert hu.min() >= -1100 and hu.max() <= 300  # HU, not stored values


def test_label_map_round_trip_is_identical(ct, tmp_path):
    geometry = read_image_series(ct.paths).geometry
    labels = phantom_labels(ct)
    path = labels_to_nifti(labels, geometry, tmp_path / "labels.nii.gz")
    assert np.allclose(nib.load(path).affine, affine_ras(geometry))
    assert np.array_equal(nifti_to_labels(path, geometry), labels)
    # a tool that reorients to the closest canonical (RAS) layout still maps back exactly
    canonical = nib.as_closest_canonical(nib.load(path))
    canonical_path = tmp_path / "canonical.nii.gz"
    nib.save(canonical, canonical_path)
    assert np.array_equal(nifti_to_labels(canonical_path, geometry), labels)


def test_labels_become_an_rtstruct_on_the_ct(ct, tmp_path):
    series = read_image_series(ct.paths)
    labels = phantom_labels(ct)
    labels[labels.shape[0] // 2, 2:5, 2:5] = 7  # a label the template does not name
    path = labels_to_nifti(labels, series.geometry, tmp_path / "labels.nii.gz")
    styles = [
        RoiStyle("body", "Body", (0, 200, 0), "EXTERNAL", 1),
        RoiStyle("lung_left", "Lung_L", (0, 128, 255), "ORGAN", 2),
        RoiStyle("lung_right", "Lung_R", (255, 160, 0), "ORGAN", 3),
    ]
    out = nifti_labels_to_rtstruct(path, ct.paths, tmp_path / "out", styles, algorithm="external.test")
    rs = pydicom.dcmread(out)
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["Body", "Lung_L", "Lung_R", "Label_7"]
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct.frame_of_reference_uid
    masks = read_rtstruct_masks(out, series)
    for name, value in [("Lung_L", 2), ("Lung_R", 3), ("Label_7", 7)]:
        assert np.array_equal(masks[name], labels == value), name
    # the body label excludes the lungs (a ring with holes): even-odd contours reproduce it exactly
    assert np.array_equal(masks["Body"], labels == 1)


def test_unevenly_spaced_series_is_refused(tmp_path):
    ct = synth.write_image_series(tmp_path / "ct", n_slices=8, rows=16, cols=16, skip_slices=[3])
    with pytest.raises(InputError, match="not evenly spaced"):
        series_to_nifti(ct.paths, tmp_path / "ct.nii.gz")
    assert not (tmp_path / "ct.nii.gz").exists()


def test_enhanced_multiframe_gives_the_same_nifti_as_single_frames(tmp_path):
    kwargs = dict(n_slices=9, rows=20, cols=18, orientation=synth.oblique_orientation(15), seed=5)
    single = synth.write_image_series(tmp_path / "single", **kwargs)
    multi = synth.write_image_series(tmp_path / "multi", multiframe=True, **kwargs)
    a = nib.load(series_to_nifti(single.paths, tmp_path / "single.nii"))
    b = nib.load(series_to_nifti(multi.paths, tmp_path / "multi.nii"))
    assert np.allclose(a.affine, b.affine, atol=1e-4)
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
