"""URL map: admin, REST API (with OpenAPI) and the web UI."""

from django.contrib import admin
from django.urls import include, path

admin.autodiscover()  # settings use SimpleAdminConfig so that CLI start-up skips this

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("dicomflow.api.urls")),
    path("intake/", include("dicomflow.intake.urls")),
    path("dicomweb/", include("dicomflow.dicomweb.urls")),
    path("", include("dicomflow.web.urls")),
]

# /favicon.ico is asked for by every browser whatever the page says: answer with ours, not a 404.
from django.templatetags.static import static as _static  # noqa: E402
from django.views.generic.base import RedirectView  # noqa: E402

urlpatterns.append(path("favicon.ico", RedirectView.as_view(url=_static("web/favicon.svg"), permanent=True)))
