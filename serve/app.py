"""The web app: the page, the JSON API behind it and its OpenAPI docs (/docs).

Every bad input gets a 4xx JSON `{"detail": "<what is wrong>"}`, never a 500 or a stack trace. The page's files are
read into memory at start-up and looked up by name, so no value from a request is ever used as a file path.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import Headers

from .engine import Engine, UnknownModels
from .models import Example, Missing

MAX_TEXT_CHARS = 10_000
MAX_BATCH_ROWS = 1_000
MAX_BATCH_CHARS = 200_000     # a batch's texts together: bounds the work one request can queue on every model
MAX_BODY_BYTES = 1 << 20      # every request body, uploads included
MAX_REPEATS = 20
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

log = logging.getLogger("serve")


# --- API schemas (they also document the API at /docs) ---------------------------------------------------------
class PredictRequest(BaseModel):
    text: str = Field(description=f"the text to classify, 1 to {MAX_TEXT_CHARS:,} characters",
                      examples=["a gripping, beautifully acted film"])
    models: list[str] | None = Field(None, description="names from GET /models; omitted: every model. "
                                     "The teacher always runs: it is the reference of every comparison")
    repeats: int = Field(3, ge=1, le=MAX_REPEATS, description="timed runs per model; latency is their median")


class BatchRequest(BaseModel):
    texts: list[str] = Field(description=f"1 to {MAX_BATCH_ROWS:,} texts, {MAX_BATCH_CHARS:,} characters together")
    labels: list[str | int] | None = Field(None, description="gold labels (names or indices), one per text; "
                                           "without them no accuracy is reported")
    models: list[str] | None = Field(None, description="as in POST /predict")


class ModelInfo(BaseModel):
    name: str
    model: str
    backend: str
    kind: str


class ModelResult(ModelInfo):
    label: str = Field(description="predicted label")
    probabilities: list[float] = Field(description="one per label, in the order of `labels`")
    latency_ms: float = Field(description="median wall time of `repeats` calls, tokenising included (under load, "
                              "of the batch this text shared with other requests)")
    batch_size: int = Field(1, description="texts in that call: concurrent requests for a model are batched")
    speedup: float | None = Field(description="teacher latency / this latency")
    cosine: float | None = Field(description="cosine similarity of the probabilities to the teacher's")
    kl: float | None = Field(description="KL(teacher || this model) in nats")
    agrees: bool | None = Field(description="same predicted label as the teacher")


class PredictResponse(BaseModel):
    labels: list[str]
    teacher: str | None
    repeats: int
    results: list[ModelResult]


class BatchSummary(ModelInfo):
    examples: int
    accuracy: float | None = Field(description="against the gold labels, when given")
    agreement: float | None = Field(description="share of texts with the teacher's label")
    mean_cosine: float | None
    mean_kl: float | None
    total_ms: float = Field(description="its batched calls over every text (chunks of 64), summed")
    ms_per_example: float
    speedup: float | None


class BatchResponse(BaseModel):
    labels: list[str]
    teacher: str | None
    results: list[BatchSummary]


class MissingInfo(BaseModel):
    name: str
    reason: str


class Limits(BaseModel):
    max_text_chars: int = MAX_TEXT_CHARS
    max_batch_rows: int = MAX_BATCH_ROWS
    max_batch_chars: int = MAX_BATCH_CHARS
    max_body_bytes: int = MAX_BODY_BYTES


class ModelsResponse(BaseModel):
    profile: str
    labels: list[str]
    teacher: str | None
    models: list[ModelInfo]
    missing: list[MissingInfo]
    limits: Limits


class ExampleInfo(BaseModel):
    text: str
    label: str


class Health(BaseModel):
    status: str = Field(description='"ok", or "no models" when none loaded')
    models: int
    missing: int


class ErrorMessage(BaseModel):
    detail: str


ERRORS = {code: {"model": ErrorMessage, "description": what} for code, what in [
    (400, "malformed JSON, a body that is not UTF-8, a malformed CSV"),
    (413, f"request body over {MAX_BODY_BYTES:,} bytes"),
    (422, "empty or oversized text or batch, unknown model or label, a wrong field type"),
    (503, "no model is loaded"),
]}


# --- errors -------------------------------------------------------------------------------------------------------
class InputError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def validation_message(errors) -> tuple[int, str]:
    """FastAPI's validation errors as one sentence a person can act on."""
    for e in errors:
        if e["type"] == "json_invalid":
            return 400, f"malformed JSON: {e.get('ctx', {}).get('error', 'cannot parse')} at character {e['loc'][-1]}"
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e["loc"][1:])
        if e["loc"][0] == "body" and not where:
            return 422, 'the body must be a JSON object such as {"text": "..."}, sent with Content-Type: ' \
                        "application/json"
        parts.append(f"{where or 'body'}: {e['msg']}")
    return 422, "; ".join(parts)


class BodyGuard:
    """Reads the whole request body, at most `limit` bytes, before the app sees it: an oversized body gets a 413 and
    a JSON body that is not UTF-8 a 400, each with a message, before any parsing can fail less clearly."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        too_large = error(413, f"the request body is over the {self.limit:,}-byte limit; "
                               "split it into smaller requests")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
        if headers.get("content-type", "").split(";")[0].strip().lower().endswith("json"):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = error(400, f"the request body is not valid UTF-8 (byte 0x{body[exc.start]:02x} "
                                 f"at position {exc.start})")
                return await bad(scope, receive, send)

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


# --- the app ------------------------------------------------------------------------------------------------------
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

    app = FastAPI(title="my-bert-is-too-big: teacher vs students",
                  description="Run a text through the fine-tuned teacher and every distilled student; compare "
                              "labels, probabilities (cosine similarity, KL divergence) and latency.",
                  version="1.0", docs_url=None)
    _offline_docs(app)
    app.add_middleware(BodyGuard, limit=MAX_BODY_BYTES)

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

    def check_text(text: str, where: str) -> None:
        if not text.strip():
            raise InputError(422, f"{where} is empty" if not text else f"{where} is only whitespace")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(422, f"{where} has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(422, f"{where} contains an unpaired surrogate, which is not valid Unicode") from None

    def check_models(names: list[str] | None) -> None:
        if not engine.predictors:
            raise InputError(503, "no model is loaded; GET /models says why")
        if names is not None and not names:
            raise InputError(422, "models is an empty list; leave it out to run every model")
        try:
            engine.select(names)
        except UnknownModels as exc:
            reasons = {m.name: m.reason for m in missing}
            described = [f"{n!r} did not load ({reasons[n]})" if n in reasons else f"{n!r} is unknown"
                         for n in exc.args[0]]
            raise InputError(422, f"{'; '.join(described)}; available: {', '.join(engine.predictors)}") from None

    def label_index(value, where: str) -> int:
        if isinstance(value, int) and 0 <= value < len(labels):
            return value
        text = str(value).strip()
        if text in labels:
            return labels.index(text)
        if text.isascii() and text.isdigit() and int(text) < len(labels):   # "²".isdigit() is True too
            return int(text)
        raise InputError(422, f"{where}: unknown label {value!r}; use one of {', '.join(labels)} "
                              f"or its index 0-{len(labels) - 1}")

    def run_batch(texts: list[str], gold: list | None, names: list[str] | None, where) -> dict:
        check_models(names)
        if not texts:
            raise InputError(422, "no texts to run")
        if len(texts) > MAX_BATCH_ROWS:
            raise InputError(422, f"{len(texts):,} texts; the limit is {MAX_BATCH_ROWS:,} per batch")
        for i, text in enumerate(texts):
            check_text(text, where(i))
        total = sum(len(t) for t in texts)
        if total > MAX_BATCH_CHARS:
            raise InputError(422, f"the batch's texts hold {total:,} characters together; the limit is "
                                  f"{MAX_BATCH_CHARS:,} per request: split it into smaller batches")
        if gold is not None:
            if len(gold) != len(texts):
                raise InputError(422, f"{len(gold)} labels for {len(texts)} texts; give one label per text")
            gold = [label_index(value, where(i)) for i, value in enumerate(gold)]
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
        check_text(request.text, "text")
        check_models(request.models)
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


def read_csv(raw: bytes) -> tuple[list[str], list[str] | None, list[int]]:
    """Texts, labels (None without a label column) and each row's line number, from an uploaded CSV."""
    if not raw.strip():
        raise InputError(422, "the uploaded file is empty")
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(400, f"the uploaded file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                              f"{exc.start}); save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "text" not in header:
            raise InputError(422, f"the CSV needs a header row with a text column (and optionally label); "
                                  f"found: {', '.join(header) or 'nothing'}")
        text_at, label_at = header.index("text"), header.index("label") if "label" in header else None
        texts, labels, lines = [], [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            texts.append(row[text_at] if text_at < len(row) else "")
            labels.append(row[label_at] if label_at is not None and label_at < len(row) else "")
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InputError(400, f"malformed CSV at line {reader.line_num}: {exc}") from None
    return texts, (labels if label_at is not None else None), lines
