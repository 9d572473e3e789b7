"""The JSON API's request and response schemas, and the limits they state (they also document the API at /docs)."""
from __future__ import annotations

from pydantic import BaseModel, Field

MAX_TEXT_CHARS = 10_000
MAX_BATCH_ROWS = 1_000
MAX_BATCH_CHARS = 200_000     # a batch's texts together: bounds the work one request can queue on every model
MAX_BODY_BYTES = 1 << 20      # every request body, uploads included
MAX_REPEATS = 20


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
