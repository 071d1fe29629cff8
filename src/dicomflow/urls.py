"""URL map: admin, REST API (with OpenAPI) and the web UI."""

from django.contrib import admin
from django.urls import include, path

admin.autodiscover()  # settings use SimpleAdminConfig so that CLI start-up skips this

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("dicomflow.api.urls")),
    path("intake/", include("dicomflow.intake.urls")),
    path("", include("dicomflow.web.urls")),
]
