"""Python SDK for the dicomflow REST API (httpx; no Django).

    from dicomflow.sdk import Client
    with Client("http://127.0.0.1:8000", api_key="...") as df:
        result = df.upload("ct/", project="TRIAL1", template="ct-body-lungs")  # waits for the import
        for job_id in df.upload_jobs(result.upload_id, timeout=60):
            job = df.wait_for_results(job_id, timeout=1800)   # JobFailed / JobCancelled / WaitTimeout
            df.download_results(job.id, "results/")
"""

from dicomflow.sdk.client import Client
from dicomflow.sdk.errors import (
    ApiError,
    JobCancelled,
    JobError,
    JobFailed,
    SdkError,
    UnsafeArchive,
    UnsupportedByServer,
    UploadFailed,
    WaitTimeout,
)
from dicomflow.sdk.models import (
    ImportResult,
    ImportRun,
    Instance,
    Job,
    Patient,
    Series,
    Study,
    UploadProblems,
    UploadSession,
)

__all__ = [
    "ApiError", "Client", "ImportResult", "ImportRun", "Instance", "Job", "JobCancelled", "JobError", "JobFailed",
    "Patient", "SdkError", "Series", "Study", "UnsafeArchive", "UnsupportedByServer", "UploadFailed",
    "UploadProblems", "UploadSession", "WaitTimeout",
]
