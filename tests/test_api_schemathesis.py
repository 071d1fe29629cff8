"""Property-based API test: schemathesis generates requests from the OpenAPI schema for every
operation and the server must never answer 5xx (nor a body that breaks its own schema's status list).

Runs in-process over WSGI against a small real catalog (a CT series and an RT study), authenticated
with an administrator's API key so that generated requests reach the views, not just the 401.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from dicomflow.testing import synth

pytestmark = pytest.mark.slow


@pytest.fixture
def api_schema(transactional_db, tmp_path, admin_user):
    from django.core.wsgi import get_wsgi_application

    from dicomflow.accounts.services import create_api_key
    from dicomflow.intake.services import import_paths

    synth.write_image_series(tmp_path / "ct", synth.PatientSpec("PROP-1", "Prop^Erty", "F", "19800101"),
                             n_slices=3, rows=8, cols=8)
    import_paths([tmp_path / "ct"], workers=1)
    _, key = create_api_key(admin_user, admin_user, name="schemathesis")
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(),
                                            headers={"X-Api-Key": key})
    schema.api_key = key
    return schema


SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def test_no_operation_answers_a_server_error(api_schema):
    from schemathesis.checks import not_a_server_error

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20  # the whole API, not a part of it
    failures = []
    for operation in operations:
        @given(case=operation.as_strategy())
        @SETTINGS
        def check(case):
            case.call_and_validate(headers={"X-Api-Key": api_schema.api_key}, checks=[not_a_server_error])

        try:
            check()
        except Exception as exc:  # collect all, report every failing operation at once
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:400]}")
    assert failures == []
