"""The online inference service: a FastAPI app over :mod:`tasks.serve`.

Build it with :func:`create_app` (``driftloop serve`` runs it under uvicorn). Nothing happens at
import: the Feast store and the registry are opened when the app starts, and the champion is
looked up then and re-read at most every ``refresh_seconds`` afterwards.

| route | does | errors |
|---|---|---|
| ``POST /predict`` | ``{"<entity>": id}`` → one prediction | 422 malformed id, 404 unknown, 503 no champion |
| ``POST /predict/batch`` | ``{"<entity>s": [...]}`` (1 to 1000) → predictions in order | same |
| ``GET /health`` | status and the champion version served | 503 while there is nothing to serve |

The fields are named after the use case: ``<entity>`` is its entity (``customer_id`` for telco),
and a prediction holds the id, the probability under the use case's prediction column
(``churn_probability``), ``model_version`` and ``features_asof``.

A request body larger than ``max_body_bytes`` (1 MiB by default) is refused with 413, whether
its ``Content-Length`` says so or the streamed body turns out larger. A 422 names where the
request is wrong and why, and never echoes what was sent (no ``input`` in the errors; at most
:data:`MAX_ERRORS` errors, each message cut to :data:`MAX_MESSAGE` characters).

The OpenAPI description is at ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftloop_config.usecase import load_usecase
from tasks.serve import (
    DEFAULT_REFRESH_SECONDS,
    MAX_BATCH,
    InvalidIds,
    NoChampion,
    Predictor,
    ServeError,
    UnknownIds,
)

if TYPE_CHECKING:
    from driftloop_config.settings import Settings

#: Largest request body accepted (bytes); a full batch of 1000 ids needs about 15 KiB.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: A 422 lists at most this many errors ...
MAX_ERRORS = 20
#: ... each message (and each part of its location) cut to this many characters.
MAX_MESSAGE = 200
_MAX_LOC_PART = 64
#: Context of a validation error that describes the rule, never the input.
_RULE_CONTEXT = ("pattern", "expected", "min_length", "max_length", "ge", "gt", "le", "lt")

# ---- the API's types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiTypes:
    """The request and answer types of the prediction routes, named after the use case: the id
    field is its entity (``customer_id``), a batch's is the plural (``customer_ids``), and the
    probability is its prediction column (``churn_probability``)."""

    entity: str
    prediction: str
    request: type[BaseModel]
    batch_request: type[BaseModel]
    prediction_model: type[BaseModel]
    batch_response: type[BaseModel]

    @property
    def batch_field(self) -> str:
        return f"{self.entity}s"


def api_types(entity: str, prediction: str, target: str, *, regression: bool = False) -> ApiTypes:
    """:class:`ApiTypes` for a use case whose entity, prediction column and target are named
    ``entity``, ``prediction`` and ``target`` (``regression``: the prediction is the predicted
    outcome, not a probability)."""
    one = Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            description=f"The {entity} to score; must match the use case's id pattern.",
        ),
    ]
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"One {entity} to score.",
        **{entity: one},  # type: ignore[call-overload]
    )
    many = Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]],
        Field(min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH} ids."),
    ]
    batch_request = create_model(
        "BatchPredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Ids ({entity}) to score in one call (scored by the same champion).",
        **{f"{entity}s": many},  # type: ignore[call-overload]
    )
    probability: Any = Annotated[
        float,
        Field(ge=0.0, le=1.0, description=f"P({target} within the horizon)."),
    ]
    if regression:
        probability = Annotated[
            float, Field(description=f"The predicted {target} over the horizon.")
        ]
    prediction_model = create_model(
        "Prediction",
        __doc__=f"The champion's {'prediction' if regression else 'probability'} of {target} "
        f"for one {entity}.",
        **{  # type: ignore[call-overload]
            entity: (str, ...),
            prediction: (probability, ...),
            "model_version": (
                str,
                Field(description="The registered model version that scored."),
            ),
            "features_asof": (
                datetime | None,
                Field(
                    description="When the features were computed (end of their last feature "
                    "day, UTC)."
                ),
            ),
        },
    )
    batch_response = create_model(
        "BatchPredictResponse",
        predictions=(
            list[prediction_model],  # type: ignore[valid-type]
            Field(description="One per requested id, in order."),
        ),
        model_version=(str, Field(description="The version that scored every prediction.")),
    )
    return ApiTypes(entity, prediction, request, batch_request, prediction_model, batch_response)


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="ok: a champion is served; degraded: a champion is served but the newest "
        "could not be read or loaded; unavailable: nothing to serve (HTTP 503)."
    )
    model: str = Field(description="The registered model name.")
    champion_version: str | None = Field(description="The version served.")
    feature_service: str | None = Field(description="The feature service it reads.")
    refresh_seconds: float = Field(description="How often the champion alias is re-read.")
    detail: str | None = Field(default=None, description="The last problem, if any.")


class ErrorResponse(BaseModel):
    detail: str


class UnknownIdsResponse(BaseModel):
    detail: str
    unknown_ids: list[str]


# ---- the app ------------------------------------------------------------------------------------


async def _predictor(request: Request) -> Predictor:
    # async: FastAPI would run a plain function in its thread pool, a hand-off per request
    predictor: Predictor | None = request.app.state.predictor
    if predictor is None:
        raise NoChampion("the service is still starting")
    return predictor


PredictorDep = Annotated[Predictor, Depends(_predictor)]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": UnknownIdsResponse, "description": "Unknown id(s)."},
    413: {"model": ErrorResponse, "description": "Request body larger than the limit."},
    503: {"model": ErrorResponse, "description": "No champion to serve yet."},
}


def _invalid(exc: InvalidIds, field: str, *, batch: bool) -> RequestValidationError:
    """Malformed ids as a standard 422 body: one error per id, located in the request."""
    errors = []
    for bad in exc.bad:
        loc: tuple[str | int, ...] = ("body", field, bad.position) if batch else ("body", field)
        error: dict[str, Any] = {
            "type": "string_pattern_mismatch",
            "loc": loc,
            "msg": exc.message(bad),
        }
        if exc.pattern:
            error["ctx"] = {"pattern": exc.pattern}
        errors.append(error)
    return RequestValidationError(errors)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def public_errors(errors: Sequence[Any]) -> dict[str, Any]:
    """A 422 body for validation ``errors``: where and why, never the input.

    Each error keeps ``type``, ``loc`` and ``msg`` (cut to :data:`MAX_MESSAGE` characters) and
    the parts of ``ctx`` that describe the rule (e.g. the id pattern); at most
    :data:`MAX_ERRORS` are listed, and ``more_errors`` counts the rest.
    """
    detail = []
    for error in list(errors)[:MAX_ERRORS]:
        loc = [
            part if isinstance(part, int) else _cut(str(part), _MAX_LOC_PART)
            for part in error.get("loc", ())
        ]
        item: dict[str, Any] = {
            "type": _cut(str(error.get("type", "value_error")), _MAX_LOC_PART),
            "loc": loc,
            "msg": _cut(str(error.get("msg", "")), MAX_MESSAGE),
        }
        ctx = error.get("ctx") or {}
        rule = {k: _cut(str(ctx[k]), MAX_MESSAGE) for k in _RULE_CONTEXT if k in ctx}
        if rule:
            item["ctx"] = rule
        detail.append(item)
    body: dict[str, Any] = {"detail": detail}
    if len(errors) > MAX_ERRORS:
        body["more_errors"] = len(errors) - MAX_ERRORS
    return body


class BodyLimit:
    """ASGI middleware: refuse a request body larger than ``max_bytes`` with 413.

    A declared ``Content-Length`` above the limit is refused before anything is read; a body
    streamed without one (or longer than declared) is counted as it arrives and refused as soon
    as it passes the limit, so no more than ``max_bytes`` (plus one chunk) is ever held.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(
            status_code=413, detail=f"request body larger than {self.max_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            exc = self._too_large()
            response = JSONResponse(
                status_code=exc.status_code,
                content={"detail": exc.detail},
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)


def create_app(
    settings: Settings,
    *,
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
    predictor: Predictor | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The online inference app for ``settings``.

    The Feast store and registry client are built at start-up (``predictor`` replaces them, e.g.
    in tests), and the champion is loaded then so the first request does not pay for it.
    Request bodies above ``max_body_bytes`` get 413.
    """
    if not math.isfinite(refresh_seconds) or refresh_seconds < 0:
        raise ValueError(f"refresh_seconds must be >= 0, got {refresh_seconds}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.predictor is None:
            from tasks.serve import build_predictor

            app.state.predictor = await run_in_threadpool(
                build_predictor, settings, refresh_seconds=refresh_seconds
            )
        await run_in_threadpool(app.state.predictor.champions.refresh)
        yield

    usecase = load_usecase(settings.usecase)
    if usecase.target is None:
        raise ValueError(f"use case {usecase.name!r} defines no target to predict")
    types = api_types(
        usecase.entity,
        usecase.prediction_column,
        usecase.target.name,
        regression=usecase.target.kind == "regression",
    )
    app = FastAPI(
        title="driftloop online inference",
        description=f"{usecase.name}: the probability of {usecase.target.name} from the "
        f"current champion model, on the online features of each {usecase.entity}. A newly "
        "promoted champion (or a rollback) is served within "
        f"`refresh_seconds` ({refresh_seconds:g} s) without a restart.",
        version="1",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.max_body_bytes = max_body_bytes
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=public_errors(exc.errors()))

    @app.exception_handler(UnknownIds)
    async def unknown_ids(request: Request, exc: UnknownIds) -> JSONResponse:
        body = UnknownIdsResponse(detail=str(exc), unknown_ids=exc.ids)
        return JSONResponse(status_code=404, content=body.model_dump())

    @app.exception_handler(NoChampion)
    async def no_champion(request: Request, exc: NoChampion) -> JSONResponse:
        retry = str(max(1, math.ceil(refresh_seconds)))
        return JSONResponse(
            status_code=503, content={"detail": str(exc)}, headers={"Retry-After": retry}
        )

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(status_code=500, content={"detail": str(exc)})

    def predict(body: BaseModel, predictor: PredictorDep) -> BaseModel:
        """The champion's probability for one id, from its online features."""
        try:
            [row] = predictor.predict([getattr(body, types.entity)])
        except InvalidIds as exc:
            raise _invalid(exc, types.entity, batch=False) from None
        return types.prediction_model(**row)

    def predict_batch(body: BaseModel, predictor: PredictorDep) -> BaseModel:
        """Predictions for every id, in the order asked, all from the same champion. Any unknown
        id fails the whole call with 404 listing the unknown ids."""
        try:
            rows = predictor.predict(getattr(body, types.batch_field))
        except InvalidIds as exc:
            raise _invalid(exc, types.batch_field, batch=True) from None
        return types.batch_response(
            predictions=[types.prediction_model(**r) for r in rows],
            model_version=rows[0]["model_version"],
        )

    # the types are built for this use case, so they are set on the routes here (FastAPI reads
    # a route's parameters and answer from its annotations)
    predict.__annotations__ |= {"body": types.request, "return": types.prediction_model}
    predict_batch.__annotations__ |= {
        "body": types.batch_request,
        "return": types.batch_response,
    }
    app.post("/predict", responses=ERRORS, summary=f"Score one {types.entity}")(predict)
    app.post("/predict/batch", responses=ERRORS, summary=f"Score up to {MAX_BATCH} ids")(
        predict_batch
    )

    @app.get(
        "/health",
        responses={503: {"model": HealthResponse, "description": "Nothing to serve."}},
        summary="Service status and the champion version served",
    )
    def health(response: Response, predictor: PredictorDep) -> HealthResponse:
        state = predictor.health()
        if state.version is None:
            status: Literal["ok", "degraded", "unavailable"] = "unavailable"
            response.status_code = 503
        else:
            status = "degraded" if state.problem else "ok"
        return HealthResponse(
            status=status,
            model=state.name,
            champion_version=state.version,
            feature_service=state.feature_service,
            refresh_seconds=predictor.champions.refresh_seconds,
            detail=state.problem,
        )

    return app
