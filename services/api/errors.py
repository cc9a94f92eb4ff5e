"""The API's errors: one hierarchy, each class knows its HTTP status, mapped to JSON in one handler."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class ApiError(Exception):
    """Base of every error the API answers on purpose; `status` is the HTTP status, `code` a stable name."""

    status: int = 500
    code: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ApiError):
    status, code = 404, "not_found"


class UnknownProduct(NotFound):
    code = "unknown_product"


class UnknownSession(NotFound):
    code = "unknown_session"


class ServiceUnavailable(ApiError):
    status, code = 503, "unavailable"


class ArtifactMissing(ServiceUnavailable):
    """The artifact a route serves from has no version yet (or none could be loaded)."""

    code = "artifact_missing"


class StoreUnavailable(ServiceUnavailable):
    """Redis (the online store) does not answer, and the route has nothing else to answer from."""

    code = "online_store_unavailable"


class BrokerUnavailable(ServiceUnavailable):
    """Kafka did not acknowledge the events in time: nothing was accepted, the client should retry."""

    code = "broker_unavailable"


def install(app: FastAPI) -> None:
    """Map every `ApiError` to ``{"error": code, "detail": message}`` with its status."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        headers = {"Retry-After": "5"} if error.status == 503 else None
        return JSONResponse({"error": error.code, "detail": error.message}, status_code=error.status, headers=headers)
