"""The operator's registry: what templates may name, and the refusals that keep secrets home."""

import json

import pytest

from dicomflow.core.operator_registry import load_registry, parse_registry
from dicomflow.errors import ConfigurationError


def test_missing_file_allows_nothing(tmp_path):
    registry = load_registry(tmp_path / "processors.json")
    with pytest.raises(ConfigurationError, match="not one the operator allows"):
        registry.command("anything")
    with pytest.raises(ConfigurationError, match="outside the allowed export roots"):
        registry.export_folder(tmp_path)


def test_a_full_registry_is_read(tmp_path):
    (tmp_path / "exports").mkdir()
    path = tmp_path / "processors.json"
    path.write_text(json.dumps({
        "commands": {"seg": {"argv": ["/bin/true", "{input}"], "timeout_seconds": 10, "env": {"A": "1"}}},
        "http_endpoints": {"draw": {"url": "https://x.example/api/", "token_variable": "DICOMFLOW_TOKEN_DRAW"}},
        "export_roots": [str(tmp_path / "exports")],
    }))
    registry = load_registry(path)
    assert registry.command("seg").argv == ("/bin/true", "{input}")
    assert registry.command("seg").env == {"A": "1"}
    endpoint = registry.http_endpoint("draw")
    assert endpoint.url == "https://x.example/api"
    assert endpoint.token({"DICOMFLOW_TOKEN_DRAW": "t0k"}) == "t0k"
    with pytest.raises(ConfigurationError, match="DICOMFLOW_TOKEN_DRAW"):
        endpoint.token({})
    assert registry.export_folder(tmp_path / "exports" / "a") == (tmp_path / "exports" / "a").resolve()


@pytest.mark.parametrize("data, message", [
    ({"http_endpoints": {"x": {"url": "https://a", "token_variable": "DICOMFLOW_SECRET_KEY"}}}, "DICOMFLOW_TOKEN_"),
    ({"commands": {"x": {"argv": ["python3", "-c", "1"]}}}, "absolute path"),
    ({"commands": {"x": {"argv": "/bin/sh -c id"}}}, "non-empty list"),
    ({"commands": {"../x": {"argv": ["/bin/true"]}}}, "name"),
    ({"http_endpoints": {"x": {"url": "file:///etc/passwd"}}}, "http"),
    ({"export_roots": ["relative/dir"]}, "absolute"),
    ({"surprise": {}}, "unknown section"),
])
def test_bad_entries_are_refused_with_a_reason(data, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_registry(data, "processors.json")


def test_export_folder_cannot_escape_its_root_through_a_link(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    registry = parse_registry({"export_roots": [str(root)]})
    with pytest.raises(ConfigurationError):
        registry.export_folder(root / "escape" / "elsewhere")
    with pytest.raises(ConfigurationError):
        registry.export_folder(root / ".." / "x")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "processors.json"
    path.write_text('{"commands": {,}}')
    with pytest.raises(ConfigurationError, match="line 1"):
        load_registry(path)
