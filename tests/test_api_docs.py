"""The API documentation page works offline: Swagger UI comes from the app, not from a CDN."""

import re

import pytest


@pytest.mark.django_db
def test_swagger_ui_is_served_locally(client, django_user_model):
    user = django_user_model.objects.create_user("docs", password="pw-docs-123")
    client.force_login(user)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r'src="([^"]+)"', html)
    assert any("swagger-ui" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith("http")], scripts
    bundle = next(s for s in scripts if "swagger-ui-bundle" in s)
    assert client.get(bundle).status_code == 200
