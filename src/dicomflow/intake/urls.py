"""Intake pages outside the admin's model pages: ZIP upload progress, result and error."""

from django.urls import path

from dicomflow.intake import views

app_name = "intake"
urlpatterns = [
    path("uploads/<int:pk>/", views.upload_progress, name="upload-progress"),
    path("uploads/<int:pk>/progress.json", views.upload_progress_json, name="upload-progress-json"),
    path("uploads/<int:pk>/result/", views.upload_result, name="upload-result"),
    path("uploads/<int:pk>/error/", views.upload_error, name="upload-error"),
]
