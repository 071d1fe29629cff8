"""Python SDK for the dicomflow REST API (httpx; no Django).

    from dicomflow.sdk import Client
    with Client("http://127.0.0.1:8000", token="...") as df:
        result = df.upload("export.zip")            # resumable; waits for the import
        for s in df.series(modality="CT"):
            df.download_series(s.series_instance_uid, "out/")
"""

from dicomflow.sdk.client import ApiError, Client
from dicomflow.sdk.models import ImportResult, ImportRun, Instance, Job, Patient, Series, Study, UploadSession

__all__ = ["ApiError", "Client", "ImportResult", "ImportRun", "Instance", "Job", "Patient", "Series", "Study", "UploadSession"]
