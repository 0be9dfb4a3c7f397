"""schemathesis against the server's OpenAPI document, in process: every generated request gets a
response that conforms to the document, and none is a 5xx. Not checked: that every schema-valid
request is accepted (a prompt and `max_tokens` past the model's context are valid JSON for the
document and a 400 by design, as with OpenAI)."""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks  # noqa: E402

from relaykit.serve import create_app  # noqa: E402

# per operation; RELAYKIT_SCHEMA_EXAMPLES=500 is the longer run recorded in benchmarks/RESULTS.md
EXAMPLES = int(os.environ.get("RELAYKIT_SCHEMA_EXAMPLES", "25"))


def test_no_5xx_and_every_response_conforms(shipped_pair):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(shipped_pair))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

        check()
