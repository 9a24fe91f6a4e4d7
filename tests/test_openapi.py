"""The published OpenAPI description stays in step with the server it describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from darkroom_gpu import errors
from darkroom_gpu.options import TRANSFORM_PARAMETERS
from darkroom_gpu.server.middleware import _HTTP_CODES
from darkroom_gpu.signing import SIGNATURE_PARAMETER

OPENAPI = Path(__file__).parent.parent / "docs" / "openapi.yaml"


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    return document


def test_routes_documented() -> None:
    paths = load()["paths"]

    assert set(paths) == {"/ping", "/healthz", "/readyz", "/metrics", "/{path}"}
    assert all(set(operations) == {"get"} for operations in paths.values())


def test_every_parameter_documented() -> None:
    parameters = load()["paths"]["/{path}"]["get"]["parameters"]
    query = {parameter["name"] for parameter in parameters if parameter["in"] == "query"}

    assert query == TRANSFORM_PARAMETERS | {SIGNATURE_PARAMETER}


def test_every_error_code_documented() -> None:
    schema = load()["components"]["schemas"]["ErrorBody"]
    documented = set(schema["properties"]["error"]["properties"]["code"]["enum"])
    raised = {
        error.code
        for error in vars(errors).values()
        if isinstance(error, type)
        and issubclass(error, errors.ServiceError)
        and error is not errors.ServiceError
    }

    assert raised <= documented
    assert set(_HTTP_CODES.values()) | {"http_error"} <= documented


def test_error_statuses_documented() -> None:
    responses = load()["paths"]["/{path}"]["get"]["responses"]
    statuses = {
        error.status
        for error in vars(errors).values()
        if isinstance(error, type)
        and issubclass(error, errors.ServiceError)
        and error is not errors.ServiceError
    }

    assert {str(status) for status in statuses} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
