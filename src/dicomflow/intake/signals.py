"""Signals intake sends, so areas above it (projects, processing) can act without intake knowing them.

``upload_imported(sender=UploadSession, session=..., report=ImportReport)``: a resumable upload's
files are catalogued; sent inside the import task before the session reads "finished", so what
receivers do is part of the upload (an error they raise fails the upload with their message).
"""

from django.dispatch import Signal

upload_imported = Signal()
