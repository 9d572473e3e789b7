"""Issue 12: the API fuzzed from its own OpenAPI schema with schemathesis (hypothesis underneath): every generated
request, valid or not, gets a response the schema documents (a 2xx, or a 4xx with a JSON `detail`), never a 5xx."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                 status_code_conformance)

from serve import Example, Missing, create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def app(tiny_run):
    from bench.zoo import native_predictors
    return create_app(native_predictors(tiny_run), [Example("a fine film", "pos")], tiny_run.labels(),
                      [Missing("ghost/torch", "not exported yet")], "tiny")


def test_every_response_is_documented_and_never_a_server_error(app):
    """Valid and invalid requests (schemathesis' positive and negative generation) for every operation."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/batch", "/batch/csv", "/health", "/models"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(checks=CHECKS)

        check()
