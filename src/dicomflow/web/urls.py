"""Web UI routes: home, catalog browser (patients → studies → series), imports, folder upload."""

from django.urls import path

from dicomflow.web import views

UID = "<str:uid>"

urlpatterns = [
    path("", views.home, name="home"),
    path("patients/", views.patients, name="patients"),
    path("patients/<int:pk>/", views.patient, name="patient"),
    path("studies/", views.studies, name="studies"),
    path(f"studies/{UID}/", views.study, name="study"),
    path(f"series/{UID}/", views.series, name="series"),
    path("imports/", views.imports, name="imports"),
    path("imports/<int:pk>/", views.import_detail, name="import"),
    path("upload/", views.upload, name="upload"),
    path("token/", views.api_token, name="api-token-page"),
]
