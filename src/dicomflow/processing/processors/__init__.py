"""Processors behind one interface: a folder of one de-identified series in, DICOM files out.

A processor is a callable ``run(request: ProcessorRequest) -> list[Path]`` registered here under
the name a template's ``processor`` gives. It sees only de-identified data and the template (its
``parameters`` and ``rois``); it writes into ``request.output_dir`` and reports through
``request.log`` (captured into the job's processing log).

- ``builtin.ct_body_lungs``: classical CT body + lungs autosegmentation (:mod:`dicomflow.core.segmentation`);
- ``external.command``: any program given input and output folders, optionally through NIfTI;
- ``remote.dicom_node``: C-STORE to a processing node, the result comes back through our receiver;
- ``remote.http``: an operator-registered HTTP processing server (health, token, upload with a confirmed
  checksum, polling, verified download, confirmation; docs/remote-processing.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.core.rules import Template
from dicomflow.errors import ProcessingError

LogFn = Callable[[str, str], None]  # (level, message)


@dataclass
class ProcessorRequest:
    input_dir: Path  # the de-identified series (nothing else)
    paths: list[Path]  # its files
    output_dir: Path  # empty, created; results go here
    template: Template
    work_dir: Path  # scratch space the processor may use
    log: LogFn = field(default=lambda level, message: None)

    @property
    def parameters(self) -> dict:
        return dict(self.template.parameters)


Processor = Callable[[ProcessorRequest], list[Path]]


def _registry() -> dict[str, Processor]:
    from dicomflow.processing.processors import builtin, external, remote_dicom, remote_http

    return {builtin.NAME: builtin.run, external.NAME: external.run, remote_dicom.NAME: remote_dicom.run,
            remote_http.NAME: remote_http.run}


def get_processor(name: str) -> Processor:
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ProcessingError(f"unknown processor '{name}' (known: {known}); fix the template") from None


def processor_names() -> list[str]:
    return sorted(_registry())
