"""A schemathesis sweep of the API's OpenAPI schema: valid and invalid input, never a 5xx.

Every operation is called with generated path, query and body values, inside
and outside their declared ranges and types (schemathesis' positive and
negative modes), against an app serving real artifacts from the test
services. Everything is up, so any 5xx (a 503 included) is a failure.

The cases come from the operation's hypothesis strategy inside an ordinary
test (schemathesis' lazy pytest loader does not run under this pytest).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from feature_store.settings import Settings
from services.api.app import create_app
from tests.api_data import build_world

pytestmark = pytest.mark.integration

#: Examples per operation and mode: enough to hit every parameter's edges, in well under a minute overall.
EXAMPLES = 15

#: (method, path, mode) of every operation, read from the schema itself (no services needed to list it);
#: negative cases only where there is an input to get wrong.
CASES = [
    (method.upper(), path, mode)
    for path, methods in create_app(Settings(_env_file=None)).openapi()["paths"].items()
    for method, spec in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or spec.get("parameters") or spec.get("requestBody")
]


@pytest.fixture(scope="module")
def api_schema(stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    world = build_world(stack, tmp_path_factory.mktemp("api-schema"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(world.settings))
    yield schema
    schemathesis.python.asgi.shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_server_errors(api_schema, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def sweep(case) -> None:
        case.call_and_validate(checks=[not_a_server_error])

    sweep()
