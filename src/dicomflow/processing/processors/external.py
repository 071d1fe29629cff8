"""``external.command``: run a configured program on the de-identified series — the way to plug in
any segmentation model.

Template parameters:
- ``command``: argv list; ``{input}`` and ``{output}`` are replaced by the input and output folders
  (with ``nifti``: ``{input}`` holds ``image.nii.gz``, ``{input_file}`` is that file, ``{output}``
  must receive one label NIfTI on the same grid);
- ``nifti`` (false): go through NIfTI both ways (core bridge: correct affine; label values become
  ROIs by the template's ``rois`` ``label`` values);
- ``timeout_seconds`` (3600), ``env`` (extra environment variables).
Without ``nifti`` the program writes DICOM files into ``{output}``. Its stdout and stderr go to the
processing log (the last lines). The command runs without a shell: no quoting surprises.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dicomflow.errors import ProcessingError
from dicomflow.processing.processors import ProcessorRequest

NAME = "external.command"
MAX_LOG_CHARS = 4000


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_LOG_CHARS else "..." + text[-MAX_LOG_CHARS:]


def _argv(command, mapping: dict[str, str]) -> list[str]:
    if isinstance(command, str) or not command or not all(isinstance(a, str) for a in command):
        raise ProcessingError(f"{NAME}: parameter 'command' must be a non-empty list of strings (argv)")
    try:
        return [a.format_map(mapping) for a in command]
    except (KeyError, ValueError) as exc:
        raise ProcessingError(f"{NAME}: unknown placeholder in 'command' ({exc}); use {{input}} and {{output}}") from None


def run(request: ProcessorRequest) -> list[Path]:
    params = request.parameters
    nifti = bool(params.get("nifti", False))
    timeout = float(params.get("timeout_seconds", 3600))
    mapping = {"input": str(request.input_dir), "output": str(request.output_dir), "input_file": ""}
    if nifti:
        from dicomflow.core.segmentation.nifti import series_to_nifti

        nifti_in = request.work_dir / "nifti-in"
        nifti_out = request.work_dir / "nifti-out"
        nifti_in.mkdir(parents=True, exist_ok=True)
        nifti_out.mkdir(parents=True, exist_ok=True)
        image = series_to_nifti(request.paths, nifti_in / "image.nii.gz")
        mapping = {"input": str(nifti_in), "output": str(nifti_out), "input_file": str(image)}
        request.log("INFO", f"{NAME}: series written as NIfTI for the command")
    argv = _argv(params.get("command"), mapping)
    env = dict(os.environ) | {str(k): str(v) for k, v in (params.get("env") or {}).items()}
    request.log("INFO", f"{NAME}: running {Path(argv[0]).name} (timeout {timeout:.0f} s)")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL, cwd=request.work_dir)
    except FileNotFoundError:
        raise ProcessingError(f"{NAME}: program '{argv[0]}' not found; fix the template's command") from None
    except PermissionError:
        raise ProcessingError(f"{NAME}: program '{argv[0]}' is not executable") from None
    except subprocess.TimeoutExpired:
        raise ProcessingError(f"{NAME}: the command did not finish within {timeout:.0f} s and was stopped") from None
    if done.stdout.strip():
        request.log("INFO", f"{NAME} stdout:\n{_tail(done.stdout)}")
    if done.stderr.strip():
        request.log("WARNING" if done.returncode else "INFO", f"{NAME} stderr:\n{_tail(done.stderr)}")
    if done.returncode != 0:
        raise ProcessingError(f"{NAME}: the command exited with status {done.returncode} (see its output in the log)")
    if nifti:
        return _labels_to_rtstruct(request, Path(mapping["output"]))
    outputs = sorted(p for p in request.output_dir.rglob("*") if p.is_file())
    if not outputs:
        raise ProcessingError(f"{NAME}: the command succeeded but wrote nothing into the output folder")
    return outputs


def _labels_to_rtstruct(request: ProcessorRequest, nifti_out: Path) -> list[Path]:
    from dicomflow.core.segmentation.nifti import nifti_labels_to_rtstruct

    labels = sorted(p for p in nifti_out.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if len(labels) != 1:
        raise ProcessingError(f"{NAME}: expected one label NIfTI in the output folder, found {len(labels)}")
    label = str(request.parameters.get("structure_set_label", "AUTO"))[:16]
    path = nifti_labels_to_rtstruct(labels[0], request.paths, request.output_dir, request.template.rois,
                                    label=label, algorithm=NAME)
    request.log("INFO", f"{NAME}: label map turned into an RTSTRUCT")
    return [Path(path)]
