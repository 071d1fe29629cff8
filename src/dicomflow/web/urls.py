"""Web UI routes: home, catalog browser (patients → studies → series), imports, folder upload;
log in/out and password change for every user, API keys, the audit log (admins)."""

from django.urls import path

from dicomflow.web import accounts, views

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
    path("login/", accounts.LoginView.as_view(), name="login"),
    path("logout/", accounts.LogoutView.as_view(), name="logout"),
    path("password/", accounts.PasswordChangeView.as_view(), name="password_change"),
    path("password/done/", accounts.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("audit/", accounts.audit, name="audit"),
]

# The processing desk (issue 11): series for processing, jobs, logs, templates, datastore, ZIP uploads.
from dicomflow.web.desk.urls import urlpatterns as desk_urlpatterns  # noqa: E402

urlpatterns += desk_urlpatterns

# Research projects (issue 12): subjects, the RT-aware uploader, DICOM lookup and staging.
from django.urls import include  # noqa: E402

urlpatterns.append(path("", include("dicomflow.web.research.urls")))
