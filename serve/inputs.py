"""What the app does with what a request brings: the body guard, the checks of texts, labels and model names, the
uploaded CSV, and the one-sentence messages every bad input gets (a 4xx JSON `{"detail": ...}`)."""
from __future__ import annotations

import csv
import io

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from .engine import Engine, UnknownModels
from .models import Missing
from .schemas import MAX_BATCH_CHARS, MAX_BATCH_ROWS, MAX_TEXT_CHARS


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


class InputChecks:
    """The checks a request's texts, gold labels and model names pass before any model runs; each failure is an
    `InputError` whose message names the problem and the fix."""

    def __init__(self, engine: Engine, labels: list[str], missing: list[Missing]):
        self.engine = engine
        self.labels = labels
        self.missing = missing

    def text(self, text: str, where: str) -> None:
        if not text.strip():
            raise InputError(422, f"{where} is empty" if not text else f"{where} is only whitespace")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(422, f"{where} has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(422, f"{where} contains an unpaired surrogate, which is not valid Unicode") from None

    def models(self, names: list[str] | None) -> None:
        if not self.engine.predictors:
            raise InputError(503, "no model is loaded; GET /models says why")
        if names is not None and not names:
            raise InputError(422, "models is an empty list; leave it out to run every model")
        try:
            self.engine.select(names)
        except UnknownModels as exc:
            reasons = {m.name: m.reason for m in self.missing}
            described = [f"{n!r} did not load ({reasons[n]})" if n in reasons else f"{n!r} is unknown"
                         for n in exc.args[0]]
            available = ", ".join(self.engine.predictors)
            raise InputError(422, f"{'; '.join(described)}; available: {available}") from None

    def label_index(self, value, where: str) -> int:
        labels = self.labels
        if isinstance(value, int) and 0 <= value < len(labels):
            return value
        text = str(value).strip()
        if text in labels:
            return labels.index(text)
        if text.isascii() and text.isdigit() and int(text) < len(labels):   # "²".isdigit() is True too
            return int(text)
        raise InputError(422, f"{where}: unknown label {value!r}; use one of {', '.join(labels)} "
                              f"or its index 0-{len(labels) - 1}")

    def batch(self, texts: list[str], gold: list | None, names: list[str] | None, where) -> list[int] | None:
        """Checks a batch (`where(i)` names its i-th text in messages); returns the gold labels as indices."""
        self.models(names)
        if not texts:
            raise InputError(422, "no texts to run")
        if len(texts) > MAX_BATCH_ROWS:
            raise InputError(422, f"{len(texts):,} texts; the limit is {MAX_BATCH_ROWS:,} per batch")
        for i, text in enumerate(texts):
            self.text(text, where(i))
        total = sum(len(t) for t in texts)
        if total > MAX_BATCH_CHARS:
            raise InputError(422, f"the batch's texts hold {total:,} characters together; the limit is "
                                  f"{MAX_BATCH_CHARS:,} per request: split it into smaller batches")
        if gold is None:
            return None
        if len(gold) != len(texts):
            raise InputError(422, f"{len(gold)} labels for {len(texts)} texts; give one label per text")
        return [self.label_index(value, where(i)) for i, value in enumerate(gold)]


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
