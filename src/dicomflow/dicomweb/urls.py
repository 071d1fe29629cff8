"""DICOMweb routes: one root ``/dicomweb/`` (everything the user may see) and a per-project root
``/dicomweb/projects/<key>/`` (that project's de-identified copy only; STOW-RS there uploads into
the project). Paths carry no trailing slash, as DICOMweb clients build them; one is tolerated.
"""

from django.urls import include, path, re_path

from dicomflow.dicomweb import selectors, views

UID = r"(?P<{}>[0-9.]{{1,64}})"
STUDY, SERIES, INSTANCE = UID.format("study"), UID.format("series"), UID.format("instance")
FRAMES = r"(?P<frames>[0-9]{1,6}(?:,[0-9]{1,6}){0,99})"


def _routes(prefix: str) -> list:
    p = "dicomweb-" + prefix
    return [
        re_path(r"^studies/?$", views.StudiesView.as_view(), name=p + "studies"),
        re_path(rf"^studies/{STUDY}/?$", views.StudyView.as_view(), name=p + "study"),
        re_path(rf"^studies/{STUDY}/metadata/?$", views.MetadataView.as_view(), name=p + "study-metadata"),
        re_path(rf"^studies/{STUDY}/series/?$", views.SearchView.as_view(level=selectors.SERIES), name=p + "study-series"),
        re_path(rf"^studies/{STUDY}/instances/?$", views.SearchView.as_view(level=selectors.INSTANCE),
                name=p + "study-instances"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/?$", views.StudyView.as_view(), name=p + "series"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/metadata/?$", views.MetadataView.as_view(),
                name=p + "series-metadata"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/instances/?$", views.SearchView.as_view(level=selectors.INSTANCE),
                name=p + "series-instances"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/?$", views.StudyView.as_view(),
                name=p + "instance"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/metadata/?$", views.MetadataView.as_view(),
                name=p + "instance-metadata"),
        re_path(rf"^studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/frames/{FRAMES}/?$", views.FramesView.as_view(),
                name=p + "frames"),
        re_path(r"^series/?$", views.SearchView.as_view(level=selectors.SERIES), name=p + "all-series"),
        re_path(r"^instances/?$", views.SearchView.as_view(level=selectors.INSTANCE), name=p + "all-instances"),
    ]


urlpatterns = [
    path("", include(_routes(""))),
    path("projects/<str:project_key>/", include(_routes("project-"))),
    path("projects/<str:project_key>/", views.DicomwebView.as_view(), name="dicomweb-project-root"),
    path("", views.DicomwebView.as_view(), name="dicomweb-root"),
]
