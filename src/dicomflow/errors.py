"""One exception hierarchy for the whole product.

Every error carries a message a user can act on. Messages never contain identifying values
(patient names, IDs, dates): they name files by path and attributes by keyword/tag only.
"""


class DicomflowError(Exception):
    """Base of every error dicomflow raises on purpose."""


class ConfigurationError(DicomflowError):
    """The installation or a setting is wrong (missing tool, bad path, bad URL)."""


class InputError(DicomflowError):
    """Something the user gave us cannot be used as it is."""


class NotDicomError(InputError):
    """A file is not a DICOM Part 10 file nor a bare dataset we can read."""


class DicomReadError(InputError):
    """A DICOM file exists but cannot be read (truncated, unreadable, malformed)."""


class MissingAttributeError(InputError):
    """A required identifying attribute (e.g. SOP Instance UID) is absent or empty."""


class ArchiveError(InputError):
    """An archive (ZIP/TAR) is unsafe or unreadable; nothing outside its working folder was written."""


class UnsafeArchiveMemberError(ArchiveError):
    """One member of an archive is refused (path traversal, absolute path, link, encrypted...)."""


class ArchiveBombError(ArchiveError):
    """An archive expands beyond the configured size or compression-ratio limits."""


class StorageError(DicomflowError):
    """The file store could not be written safely."""


class NetworkError(DicomflowError):
    """A DICOM association or transfer failed."""


class AssociationRejectedError(NetworkError):
    """The remote node rejected our association (wrong AE title, not allowed)."""


class PermissionDeniedError(DicomflowError):
    """The user is not allowed to do this (e.g. re-identify, stage without the data-manager role)."""


class NotFoundError(DicomflowError):
    """The object does not exist, or the user may not know that it does (another project's data).

    Interfaces answer both the same way (HTTP 404), so that nobody learns what another project holds.
    """


class ConfirmationRequiredError(InputError):
    """The action would replace or discard something; it is done only when the caller confirms."""


class DeidentificationError(DicomflowError):
    """De-identification could not be completed safely; nothing was released."""


class LeakDetectedError(DeidentificationError):
    """The leak scan found an identifying value in the output."""


class ProcessingError(DicomflowError):
    """A processing stage failed."""


class RuleDefinitionError(InputError):
    """A rule, ruleset or template definition is malformed (unknown attribute, operator, value)."""


class SegmentationError(ProcessingError):
    """A segmentation processor cannot work on its input (not a usable CT stack, nothing found)."""


class UploadError(InputError):
    """A resumable upload request cannot be applied (wrong offset, checksum, state or size limit)."""


class UnsupportedMediaTypeError(InputError):
    """The request body is not of a media type this endpoint accepts (HTTP 415)."""


class NotAcceptableError(InputError):
    """None of the media types the client accepts can be produced (HTTP 406)."""


class RequestTooLargeError(InputError):
    """The request is larger (bytes, files) than this server accepts in one request (HTTP 413)."""
