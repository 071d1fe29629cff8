"""URL map: admin, REST API (with OpenAPI) and the web UI."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("dicomflow.api.urls")),
    path("intake/", include("dicomflow.intake.urls")),
    path("", include("dicomflow.web.urls")),
]
