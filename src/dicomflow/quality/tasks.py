"""Celery tasks of the quality loop: each calls one service."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="dicomflow.quality.tasks.compare_with_result")
def compare_with_result(job_id: int, instance_id: int) -> int:
    from dicomflow.quality import services

    return services.compare_with_result(job_id, instance_id).pk
