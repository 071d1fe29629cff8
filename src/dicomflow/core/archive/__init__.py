"""Safe intake of archives and folders, used by every intake path (CLI, uploads, watched folders).

- :func:`is_archive` / :func:`archive_kind`: ZIP, TAR, tar.gz/bz2/xz by magic bytes.
- :func:`extract_archive`: extract one archive into a folder, refusing unsafe members one by one
  and failing the whole archive (removing all it wrote) on bombs and corruption; see
  :mod:`.extract` for the rules and :mod:`.limits` for the limits and why they default as they do.
- :func:`iter_input_files`: walk files/folders, opening archives (also nested, also inside
  folders) as they are reached; see :mod:`.walk` for the symbolic-link policy.

Nothing here ever writes outside the destination folder it was given.
"""

from dicomflow.core._lazy import lazy_exports
from dicomflow.core.archive.detect import ArchiveKind, archive_kind, is_archive
from dicomflow.core.archive.limits import ArchiveLimits
from dicomflow.core.archive.members import ExtractedFile, ExtractionResult, RefusalCode, RefusedMember
from dicomflow.core.archive.walk import InputFile, RefusedInput, iter_input_files

# The extractor (zipfile, tarfile, ...) loads when an archive is met: a folder of plain files, the
# usual import, forks its workers ~10 ms sooner without it.
__getattr__ = lazy_exports(__name__, {"extract_archive": "extract"})

__all__ = [
    "ArchiveKind",
    "ArchiveLimits",
    "ExtractedFile",
    "ExtractionResult",
    "InputFile",
    "RefusalCode",
    "RefusedInput",
    "RefusedMember",
    "archive_kind",
    "extract_archive",
    "is_archive",
    "iter_input_files",
]
