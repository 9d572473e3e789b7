"""The web app: the page, the JSON API behind it (schemas.py) and its OpenAPI docs (/docs).

Every bad input gets a 4xx JSON `{"detail": "<what is wrong>"}`, never a 500 or a stack trace (inputs.py). The
page's files are read into memory at start-up and looked up by name, so no value from a request is ever used as a
file path.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response

from .engine import Engine
from .inputs import BodyGuard, InputChecks, InputError, error, read_csv, validation_message
from .models import Example, Missing
from .schemas import (ERRORS, MAX_BODY_BYTES, BatchRequest, BatchResponse, ExampleInfo, Health, Limits,
                      ModelsResponse, PredictRequest, PredictResponse)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

log = logging.getLogger("serve")


def _offline_docs(app: FastAPI) -> None:
    """/docs from the swagger-ui-bundle package instead of FastAPI's default CDN, so it works offline."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=str(swagger_ui_path)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} — API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css", swagger_favicon_url="")


def _error_handlers(app: FastAPI) -> None:
    """Every error leaves as the same one-line JSON: a bad input with its status, anything else as a 500."""

    @app.exception_handler(InputError)
    async def input_error(_, exc: InputError):
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, exc: RequestValidationError):
        return error(*validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def internal_error(_, exc: Exception):
        log.exception("unexpected error")
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def create_app(predictors, examples: list[Example] = (), labels: list[str] = (), missing: list[Missing] = (),
               profile: str = "", concurrency: int = 1) -> FastAPI:
    """The app over any list of bench Predictors; `missing` lists models that did not load, with the reason;
    `concurrency` calls of one model may run at once (see `Engine`)."""
    engine = Engine(list(predictors), concurrency)
    labels = list(labels) or (list(engine.teacher.labels) if engine.teacher else [])
    missing = list(missing)
    examples = [ExampleInfo(text=e.text, label=e.label) for e in examples]
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}
    checks = InputChecks(engine, labels, missing)

    app = FastAPI(title="my-bert-is-too-big: teacher vs students",
                  description="Run a text through the fine-tuned teacher and every distilled student; compare "
                              "labels, probabilities (cosine similarity, KL divergence) and latency.",
                  version="1.0", docs_url=None)
    _offline_docs(app)
    app.add_middleware(BodyGuard, limit=MAX_BODY_BYTES)
    _error_handlers(app)

    def run_batch(texts: list[str], gold: list | None, names: list[str] | None, where) -> dict:
        gold = checks.batch(texts, gold, names, where)
        results = engine.compare_batch(texts, gold, names)
        return {"labels": labels, "teacher": engine.teacher and engine.teacher.name, "results": results}

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(index_html)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in static:
            return error(404, f"no static file {name!r}")
        return Response(static[name], media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/health", response_model=Health, summary="Is the server up, and how many models loaded")
    async def health():
        return {"status": "ok" if engine.predictors else "no models", "models": len(engine.predictors),
                "missing": len(missing)}

    @app.get("/models", response_model=ModelsResponse, summary="The loaded models, and the missing ones with why")
    async def models():
        return {"profile": profile, "labels": labels, "teacher": engine.teacher and engine.teacher.name,
                "models": [{"name": p.name, "model": p.model, "backend": p.backend, "kind": p.kind}
                           for p in engine.predictors.values()],
                "missing": [{"name": m.name, "reason": m.reason} for m in missing], "limits": Limits()}

    @app.get("/examples", response_model=list[ExampleInfo], summary="A few sentences from the test split")
    async def example_sentences():
        return examples

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS,
              summary="One text through the teacher and the selected models, compared with the teacher")
    def predict(request: PredictRequest):
        checks.text(request.text, "text")
        checks.models(request.models)
        results = engine.compare(request.text, request.models, request.repeats)
        return {"labels": labels, "teacher": engine.teacher and engine.teacher.name, "repeats": request.repeats,
                "results": results}

    @app.post("/batch", response_model=BatchResponse, responses=ERRORS,
              summary="Many texts: per-model accuracy, agreement with the teacher and latency")
    def batch(request: BatchRequest):
        return run_batch(request.texts, request.labels, request.models, lambda i: f"texts[{i}]")

    @app.post("/batch/csv", response_model=BatchResponse, responses=ERRORS,
              summary="As POST /batch, from an uploaded CSV with a header row: text (required), label (optional)")
    def batch_csv(file: UploadFile = File(description="UTF-8 CSV with a `text` and optionally a `label` column"),
                  models: str = Form("", description="comma-separated model names; empty: every model")):
        texts, gold, lines = read_csv(file.file.read())
        names = [n.strip() for n in models.split(",") if n.strip()] or None
        return run_batch(texts, gold, names, lambda i: f"CSV line {lines[i]}")

    return app
