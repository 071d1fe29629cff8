"""``external.command``: run a program the operator registered on the de-identified series — the way
to plug in any segmentation model.

Template parameters:
- ``command``: the NAME of a command in the operator's registry (``processors.json``, see
  :mod:`dicomflow.core.operator_registry`). The registry entry gives the argv (``{input}``,
  ``{output}`` and ``{input_file}`` are replaced by the input and output folders and, with ``nifti``,
  the input NIfTI file), ``timeout_seconds``, ``nifti`` and extra ``env``. A template never gives an
  argv, an environment or a working folder (refused when it is saved);
- ``structure_set_label`` (nifti only): the label of the RTSTRUCT made from the label map.
With ``nifti`` the series goes through NIfTI both ways (core bridge: correct affine; label values
become ROIs by the template's ``rois`` ``label`` values); without it the program writes DICOM files
into ``{output}``.

The program runs without a shell, stdin closed, in its job's folder, with a minimal environment:
``PATH=/usr/bin:/bin``, ``LANG``/``LC_ALL=C.UTF-8``, ``HOME`` and ``TMPDIR`` inside the job's folder,
plus the registry entry's ``env`` — never the server's environment (no secret key, database URL or
tokens). It sees only its job's de-identified input. On timeout its whole process group is killed.
Its stdout and stderr go to the processing log (the last lines).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from dicomflow.errors import ConfigurationError, ProcessingError
from dicomflow.processing.processors import ProcessorRequest

NAME = "external.command"
MAX_LOG_CHARS = 4000
MINIMAL_PATH = "/usr/bin:/bin"


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_LOG_CHARS else "..." + text[-MAX_LOG_CHARS:]


def registered_command(name: object):
    """The registry entry a template's ``command`` names; ProcessingError saying what to do otherwise."""
    from dicomflow.processing.registry import UNREGISTERED_COMMAND, UNREGISTERED_MESSAGE, operator_registry

    if isinstance(name, list) or name == UNREGISTERED_COMMAND:
        raise ProcessingError(f"{NAME}: {UNREGISTERED_MESSAGE}")
    try:
        return operator_registry().command(name)
    except ConfigurationError as exc:
        raise ProcessingError(f"{NAME}: {exc}") from None


def _argv(argv: tuple[str, ...], mapping: dict[str, str]) -> list[str]:
    try:
        return [a.format_map(mapping) for a in argv]
    except (KeyError, ValueError, IndexError) as exc:
        raise ProcessingError(f"{NAME}: unknown placeholder in the registered command ({exc}); "
                              "use {input}, {output} and {input_file}") from None


def minimal_environment(work_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The whole environment of a command: nothing of the server's own (secrets, tokens, database URL)."""
    home = work_dir / "home"
    tmp = work_dir / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": MINIMAL_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(home), "TMPDIR": str(tmp),
            **{str(k): str(v) for k, v in extra.items()}}


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` in its own session (process group); the whole group is killed on timeout."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", env=env, cwd=cwd, start_new_session=True,
                          close_fds=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            raise
        except BaseException:
            _kill_group(process)
            raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def run(request: ProcessorRequest) -> list[Path]:
    params = request.parameters
    command = registered_command(params.get("command"))
    nifti = command.nifti
    timeout = command.timeout_seconds
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
    argv = _argv(command.argv, mapping)
    env = minimal_environment(request.work_dir, dict(command.env))
    request.log("INFO", f"{NAME}: running '{command.name}' (timeout {timeout:.0f} s)")
    try:
        done = _run(argv, env=env, cwd=request.work_dir, timeout=timeout)
    except FileNotFoundError:
        raise ProcessingError(f"{NAME}: the program of command '{command.name}' was not found; "
                              "the operator must fix processors.json") from None
    except PermissionError:
        raise ProcessingError(f"{NAME}: the program of command '{command.name}' is not executable") from None
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
