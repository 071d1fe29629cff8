"""The fast writer must produce exactly what pydicom's writer produces."""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.filewriter import dcmwrite

from dicomflow.core.deid import Deidentifier, Options, ProjectKey
from dicomflow.core.deid.engine import PIXEL_DATA
from dicomflow.core.deid.fastwrite import encode
from dicomflow.testing import synth
from test_deid_corpus import PATIENT, _plant


def test_fast_writer_is_byte_identical_to_pydicom(tmp_path):
    info = synth.write_rt_study(tmp_path / "e", patient=PATIENT, n_slices=3, rows=16, cols=16, decorate=_plant, seed=21)
    implicit = synth.write_image_series(tmp_path / "i", n_slices=2, rows=16, cols=16, implicit_vr=True, seed=22)
    deid = Deidentifier(ProjectKey("FW", b"f" * 32), Options())
    paths = info.paths + implicit.paths
    for path in paths:
        ds = dcmread(path, defer_size=256)
        deid.deidentify(ds)
        if PIXEL_DATA in ds:
            del ds[PIXEL_DATA]
        ours = encode(ds)
        ref = io.BytesIO()
        dcmwrite(ref, ds, enforce_file_format=True)
        assert ours == ref.getvalue(), path
    assert len(paths) > 10
