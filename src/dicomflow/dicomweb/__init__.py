"""DICOMweb (PS3.18): STOW-RS into the import service, QIDO-RS and WADO-RS reads of the catalog,
under ``/dicomweb/`` and per project under ``/dicomweb/projects/<key>/``, scoped and authenticated
like the REST API. Not a Django app (no models): ``multipart`` (streamed bodies), ``selectors``
(searches, retrieve targets, metadata), ``services`` (store, audit), ``views``, ``urls``.
"""
