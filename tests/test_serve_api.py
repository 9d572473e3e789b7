"""serve's JSON API over the tiny run: every model answers, and every bad input gets a clear 4xx JSON message."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient

from distill.families.predictor import Predictor
from bench.zoo import native_predictors
from distill.config import apply_overrides
from distill.pipeline import Run
from serve import Example, Missing, create_app, load_run
from serve.schemas import MAX_BATCH_CHARS, MAX_BATCH_ROWS, MAX_BODY_BYTES, MAX_TEXT_CHARS


@pytest.fixture(scope="module")
def predictors(tiny_run):
    return native_predictors(tiny_run)


@pytest.fixture(scope="module")
def client(tiny_run, predictors):
    examples = [Example("a fine film", "pos")]
    app = create_app(predictors, examples, tiny_run.labels(), [Missing("ghost/torch", "not exported yet")], "tiny")
    # raise_server_exceptions=False: a 500 must show up as a status code here, not as an exception
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_clear_error(response, status: int, *words: str):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Traceback" not in response.text
    for word in words:
        assert word.lower() in detail.lower(), detail


# --- loading -------------------------------------------------------------------------------------------------------
def test_load_run_loads_what_native_predictors_gives_with_a_line_per_model(tiny_run, predictors):
    lines = []
    loaded = load_run(tiny_run, log=lines.append)
    assert [p.name for p in loaded.predictors] == [p.name for p in predictors]
    assert loaded.missing == []
    assert loaded.labels == tiny_run.labels()
    assert len(lines) == len(predictors) and all("loaded" in line for line in lines)
    assert loaded.examples and all(e.label in loaded.labels and e.text for e in loaded.examples)


def test_a_model_that_fails_to_load_is_reported_missing_and_the_rest_serve(tiny_run):
    # a real student that no test builds (test_ablation builds transformers into the tiny run's artifacts)
    names = tiny_run.cfg["students"]["names"] + ["born_again"]
    cfg = apply_overrides(tiny_run.cfg, ["students.names=[" + ", ".join(f'"{n}"' for n in names) + "]"])
    run = Run(tiny_run.profile, cfg, tiny_run.dir.parent, tiny_run.reports.parent, progress=False,
              log=lambda *_: None)
    lines = []
    loaded = load_run(run, log=lines.append)
    assert {m.name for m in loaded.missing} == {"born_again-baseline", "born_again-distilled"}
    assert all("has not been built" in m.reason for m in loaded.missing)
    assert sum("MISSING" in line for line in lines) == 2
    assert any(p.kind == "teacher" for p in loaded.predictors)

    with TestClient(create_app(loaded.predictors, loaded.examples, loaded.labels, loaded.missing)) as c:
        assert {m["name"] for m in c.get("/models").json()["missing"]} == {"born_again-baseline",
                                                                            "born_again-distilled"}
        assert_clear_error(c.post("/predict", json={"text": "fine", "models": ["born_again-baseline"]}), 422,
                           "did not load", "has not been built")


def test_a_run_without_artifacts_still_serves_the_page_and_says_why(tmp_path, tiny_run):
    run = Run("nothing", tiny_run.cfg, tmp_path / "artifacts", tmp_path / "reports", progress=False,
              log=lambda *_: None)
    loaded = load_run(run, log=lambda *_: None)
    assert loaded.predictors == [] and "has not been built" in loaded.missing[0].reason
    with TestClient(create_app(loaded.predictors, loaded.examples, loaded.labels, loaded.missing)) as c:
        assert c.get("/").status_code == 200
        assert c.get("/health").json() == {"status": "no models", "models": 0, "missing": 1}
        assert "make distill" in c.get("/models").json()["missing"][0]["reason"]
        assert_clear_error(c.post("/predict", json={"text": "fine"}), 503, "no model is loaded")


# --- the API -------------------------------------------------------------------------------------------------------
def test_health_models_and_examples(client, predictors, tiny_run):
    assert client.get("/health").json() == {"status": "ok", "models": len(predictors), "missing": 1}
    info = client.get("/models").json()
    assert [m["name"] for m in info["models"]] == [p.name for p in predictors]
    assert info["teacher"] == "teacher/torch" and info["labels"] == tiny_run.labels()
    assert info["missing"] == [{"name": "ghost/torch", "reason": "not exported yet"}]
    assert info["limits"]["max_text_chars"] == MAX_TEXT_CHARS
    assert client.get("/examples").json() == [{"text": "a fine film", "label": "pos"}]


def test_predict_runs_every_model_and_compares_it_with_the_teacher(client, predictors):
    body = client.post("/predict", json={"text": "a gripping, beautifully acted film", "repeats": 2}).json()
    results = body["results"]
    assert [r["name"] for r in results] == [p.name for p in predictors]
    teacher = results[0]
    assert teacher["kind"] == "teacher" and teacher["speedup"] == 1.0 and teacher["agrees"] is True
    assert teacher["cosine"] == pytest.approx(1.0) and teacher["kl"] == pytest.approx(0.0, abs=1e-9)
    for r in results:
        probs = np.array(r["probabilities"])
        assert probs.shape == (len(body["labels"]),) and probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == body["labels"][int(probs.argmax())]
        assert r["latency_ms"] > 0 and r["speedup"] > 0
        assert -1e-9 <= r["kl"] and 0 < r["cosine"] <= 1 + 1e-9
        assert r["agrees"] == (r["label"] == teacher["label"])


def test_predict_a_subset_always_includes_the_teacher(client):
    body = client.post("/predict", json={"text": "dull", "models": ["nb-distilled/sklearn"]}).json()
    assert [r["name"] for r in body["results"]] == ["teacher/torch", "nb-distilled/sklearn"]


def test_the_same_text_gives_the_same_probabilities(client):
    first, second = (client.post("/predict", json={"text": "slow but moving"}).json() for _ in range(2))
    assert [r["probabilities"] for r in first["results"]] == [r["probabilities"] for r in second["results"]]


# --- bad input: 4xx with a message, never a 500 --------------------------------------------------------------------
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("payload, status, words", [
    ({"text": ""}, 422, ["text is empty"]),
    ({"text": " \n\t "}, 422, ["whitespace"]),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 422, [f"{MAX_TEXT_CHARS:,}"]),
    ({"text": "fine", "models": ["no-such-model"]}, 422, ["'no-such-model' is unknown", "available"]),
    ({"text": "fine", "models": ["ghost/torch"]}, 422, ["did not load", "not exported yet"]),
    ({"text": "fine", "models": []}, 422, ["empty list"]),
    ({"text": "fine", "repeats": 0}, 422, ["repeats"]),
    ({"text": "fine", "repeats": 10_000}, 422, ["repeats"]),
    ({"text": 42}, 422, ["text", "string"]),
    ({"txt": "fine"}, 422, ["text", "required"]),
    (["fine"], 422, ["JSON object"]),
])
def test_bad_predict_requests_get_a_clear_message(client, payload, status, words):
    assert_clear_error(client.post("/predict", json=payload), status, *words)


@pytest.mark.parametrize("body, headers, status, words", [
    (b'{"text": "caf\xe9"}', JSON, 400, ["not valid UTF-8", "0xe9"]),
    (b'{"text": "fine",}', JSON, 400, ["malformed JSON"]),
    (b'{"text": ', JSON, 400, ["malformed JSON"]),
    (b"", JSON, 422, ["JSON object"]),
    ('{"text": "\\ud800 lone surrogate"}'.encode(), JSON, 422, ["surrogate"]),
    (b"text=fine", {"content-type": "application/x-www-form-urlencoded"}, 422, ["Content-Type: application/json"]),
    (b'{"text": "' + b"x" * MAX_BODY_BYTES + b'"}', JSON, 413, ["limit"]),
])
def test_undecodable_or_oversized_bodies_get_a_clear_message(client, body, headers, status, words):
    assert_clear_error(client.post("/predict", content=body, headers=headers), status, *words)


def test_an_oversized_body_without_content_length_is_refused_too(client):
    chunks = (b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))   # sent chunked, no Content-Length
    assert_clear_error(client.post("/predict", content=chunks, headers=JSON), 413, "limit")


@pytest.mark.parametrize("path", ["/static/..%2F..%2Fpyproject.toml", "/static/%2Fetc%2Fpasswd", "/static/index.html",
                                  "/static/app.py", "/nope"])
def test_no_request_path_reaches_the_file_system(client, path):
    response = client.get(path)
    assert response.status_code == 404 and "detail" in response.json()


def test_wrong_method_is_a_json_405(client):
    assert client.get("/predict").status_code == 405


def test_a_failing_model_is_a_500_without_a_stack_trace():
    @dataclass
    class Broken(Predictor):
        def prepare(self, texts):
            return texts

        def run(self, prepared):
            raise RuntimeError("secret internals")

    with TestClient(create_app([Broken("broken", "none", ["neg", "pos"], "teacher")]),
                    raise_server_exceptions=False) as c:
        response = c.post("/predict", json={"text": "fine"})
    assert response.status_code == 500 and "RuntimeError" in response.json()["detail"]
    assert "secret internals" not in response.text and "Traceback" not in response.text


# --- concurrency ---------------------------------------------------------------------------------------------------
@dataclass
class Sleepy(Predictor):
    """Sleeps `seconds` per call and records how many of its calls overlap."""
    seconds: float = 0.0
    running: int = 0
    most_at_once: int = 0
    started: object = None

    def prepare(self, texts):
        return texts

    def run(self, prepared):
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        if self.started is not None:
            self.started.set()
        time.sleep(self.seconds)
        self.running -= 1
        return np.full((len(prepared), 2), 0.5)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_long_batch_does_not_hold_other_models_hostage(concurrency):
    """While a batch runs on a slow student, a prediction from the teacher alone answers at once (call slots per
    model, not one lock for the server); the slow student never runs more than `concurrency` calls at once."""
    from serve.engine import BATCH_CHUNK, Engine
    teacher = Sleepy("teacher", "torch", ["neg", "pos"], "teacher")
    slow = Sleepy("slow", "torch", ["neg", "pos"], "distilled", seconds=0.1, started=threading.Event())
    engine = Engine([teacher, slow], concurrency)
    batch = threading.Thread(target=engine.compare_batch, args=(["a text"] * (4 * BATCH_CHUNK), None, ["slow/torch"]))
    started = time.perf_counter()
    batch.start()
    assert slow.started.wait(5)
    engine.compare("another text", ["teacher/torch"], repeats=1)
    answered = time.perf_counter() - started
    with ThreadPoolExecutor(4) as pool:   # more callers of the slow model: they queue for its call slots
        list(pool.map(lambda _: engine.compare("x", ["slow/torch"], 1), range(4)))
    batch.join()
    assert answered < 0.1 < 0.4 <= time.perf_counter() - started   # the batch alone takes 4 chunks x 0.1 s
    assert slow.most_at_once == concurrency


@dataclass
class Counting(Predictor):
    """Probabilities that depend on the text alone; records the size of every call."""
    seconds: float = 0.02
    calls: list = None

    def prepare(self, texts):
        return texts

    def run(self, prepared):
        self.calls.append(len(prepared))
        time.sleep(self.seconds)
        p = np.array([(sum(map(ord, t)) % 97) / 97 for t in prepared])
        return np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrent_predictions_are_batched_and_each_gets_its_own_answer(concurrency):
    from serve.engine import MAX_MICRO_BATCH, Engine
    teacher = Counting("teacher", "torch", ["neg", "pos"], "teacher", calls=[])
    student = Counting("student", "numpy", ["neg", "pos"], "distilled", seconds=0.0, calls=[])
    engine = Engine([teacher, student], concurrency)
    texts = [f"text number {i}" for i in range(48)]
    alone = {t: Counting("x", "x", ["neg", "pos"], "x", calls=[], seconds=0).predict_proba([t])[0] for t in texts}
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda t: engine.compare(t, None, 1), texts))
    for text, rows in zip(texts, answers):
        for row in rows:
            assert row["probabilities"] == pytest.approx(list(alone[text]), abs=1e-6)
            assert row["agrees"] is True and 1 <= row["batch_size"] <= MAX_MICRO_BATCH
    assert sum(teacher.calls) == len(texts) and len(teacher.calls) < len(texts) / 2   # batched, nothing lost
    assert max(teacher.calls) <= MAX_MICRO_BATCH
    assert engine.compare("alone", None, 1)[0]["batch_size"] == 1                     # no load: batch 1


def test_an_ensemble_is_answered_from_its_members_answers_in_the_same_request():
    """An ensemble after its members (load order) is their mean, timed as their sum, with no member run twice; asked
    for alone, it runs its members itself and gives the same probabilities."""
    from distill.families.predictor import EnsemblePredictor
    from serve.engine import Engine

    def member(name, seconds):
        return Counting(name, "numpy", ["neg", "pos"], "distilled", seconds=seconds, calls=[])

    teacher = Counting("teacher", "torch", ["neg", "pos"], "teacher", seconds=0.0, calls=[])
    members = [member("a", 0.01), member("b", 0.02)]
    ensemble = EnsemblePredictor("ensemble", "native", ["neg", "pos"], "ensemble", members=members)
    engine = Engine([teacher, *members, ensemble])
    rows = {r["name"]: r for r in engine.compare("some text", None, repeats=1)}
    assert [len(m.calls) for m in members] == [1, 1]
    a, b, mean = (np.array(rows[n]["probabilities"]) for n in ("a/numpy", "b/numpy", "ensemble/native"))
    np.testing.assert_allclose(mean, (a + b) / 2, atol=1e-6)
    assert rows["ensemble/native"]["latency_ms"] == pytest.approx(rows["a/numpy"]["latency_ms"]
                                                                  + rows["b/numpy"]["latency_ms"], abs=2e-3)
    alone = {r["name"]: r for r in engine.compare("some text", ["ensemble/native"], repeats=1)}
    assert [len(m.calls) for m in members] == [2, 2]   # run by the ensemble itself this time
    assert alone["ensemble/native"]["probabilities"] == pytest.approx(list(mean), abs=1e-6)
    batch = {r["name"]: r for r in engine.compare_batch(["one", "two", "three"], [0, 1, 1], None)}
    assert [len(m.calls) for m in members] == [3, 3]
    assert batch["ensemble/native"]["total_ms"] == pytest.approx(batch["a/numpy"]["total_ms"]
                                                                 + batch["b/numpy"]["total_ms"], abs=2e-3)


def test_an_ensemble_follows_its_members_into_their_serving_backends():
    from distill.families.predictor import EnsemblePredictor
    from serve.models import ensemble_of_served

    def member(name, backend):
        return Counting(name, backend, ["neg", "pos"], "distilled", calls=[])

    native = [member("a", "sklearn"), member("b", "torch")]
    ensemble = EnsemblePredictor("ensemble", "native", ["neg", "pos"], "ensemble", members=native)
    assert ensemble_of_served(ensemble, [member("a", "sklearn"), member("b", "torch")]) is ensemble
    faster = [member("a", "numpy"), member("b", "onnx")]
    served = ensemble_of_served(ensemble, faster)
    assert served.name == "ensemble/serving" and served.members == faster and ensemble.members == native


def test_concurrent_requests_with_the_same_text_each_get_an_answer():
    from serve.engine import MAX_MICRO_BATCH, Engine
    engine = Engine([Counting("teacher", "torch", ["neg", "pos"], "teacher", calls=[])])
    n = 2 * MAX_MICRO_BATCH + 8   # more equal requests than one batch holds
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: engine.compare("the same text", None, 1)[0]["label"], range(n)))
    assert len(answers) == n and len(set(answers)) == 1


def test_a_failing_batch_fails_its_requests_and_the_queued_ones_still_run():
    from serve.engine import Engine
    running = threading.Event()

    @dataclass
    class FailsOnce(Counting):
        def run(self, prepared):
            if not self.calls:
                self.calls.append(-1)
                running.set()
                time.sleep(0.1)   # the others queue meanwhile
                raise RuntimeError("first call fails")
            return super().run(prepared)

    engine = Engine([FailsOnce("teacher", "torch", ["neg", "pos"], "teacher", calls=[])])

    def call(t):
        try:
            return engine.compare(t, None, 1)[0]["batch_size"]
        except RuntimeError:
            return "failed"

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(call, "first")
        assert running.wait(5)
        rest = list(pool.map(call, [f"t{i}" for i in range(7)]))
    assert first.result() == "failed"
    assert "failed" not in rest and max(rest) > 1, rest


# --- batch ---------------------------------------------------------------------------------------------------------
def test_batch_reports_accuracy_agreement_and_latency_per_model(client, predictors, tiny_run):
    texts = ["a gripping film", "dull and overlong", "fine"]
    first = tiny_run.labels()[1]
    body = client.post("/batch", json={"texts": texts, "labels": [first, 0, "1"]}).json()   # names or indices
    assert [r["name"] for r in body["results"]] == [p.name for p in predictors]
    gold = np.array([1, 0, 1])
    for r, p in zip(body["results"], predictors):
        assert r["examples"] == 3 and r["total_ms"] > 0 and r["ms_per_example"] > 0
        assert r["accuracy"] == pytest.approx(np.mean(p.predict(texts) == gold), abs=1e-6)
        assert 0 <= r["agreement"] <= 1 and r["mean_kl"] >= 0
    assert body["results"][0]["agreement"] == 1.0
    assert client.post("/batch", json={"texts": texts}).json()["results"][0]["accuracy"] is None


@pytest.mark.parametrize("payload, words", [
    ({"texts": []}, ["no texts"]),
    ({"texts": ["ok", "  "]}, ["texts[1]", "whitespace"]),
    ({"texts": ["ok"] * (MAX_BATCH_ROWS + 1)}, [f"{MAX_BATCH_ROWS:,}"]),
    ({"texts": ["ok", "fine"], "labels": ["pos"]}, ["1 labels for 2 texts"]),
    ({"texts": ["ok"], "labels": ["meh"]}, ["texts[0]", "unknown label 'meh'"]),
    ({"texts": ["ok"], "labels": [7]}, ["unknown label"]),
    ({"texts": ["ok"], "labels": ["²"]}, ["unknown label '²'"]),      # "²".isdigit(), but int("²") fails
    ({"texts": ["x" * 1_000] * (MAX_BATCH_CHARS // 1_000 + 1)}, [f"{MAX_BATCH_CHARS:,}", "split"]),
    ({"texts": ["ok"], "models": ["nope"]}, ["'nope' is unknown"]),
    ({"texts": "ok"}, ["texts"]),
])
def test_bad_batches_get_a_clear_message(client, payload, words):
    assert_clear_error(client.post("/batch", json=payload), 422, *words)


def upload(client, content: bytes, models: str = ""):
    return client.post("/batch/csv", files={"file": ("../../etc/passwd", content, "text/csv")},
                       data={"models": models})


def test_csv_upload_with_labels(client, tiny_run):
    first, second = tiny_run.labels()
    csv_text = f'\ufefftext,label\n"a gripping, moving film",{first}\ndull,{second}\n\nfine,1\n'
    body = upload(client, csv_text.encode(), "nb-baseline/sklearn").json()
    assert [r["name"] for r in body["results"]] == ["teacher/torch", "nb-baseline/sklearn"]
    assert all(r["examples"] == 3 and r["accuracy"] is not None for r in body["results"])


def test_csv_upload_without_labels(client):
    body = upload(client, b"Text\nfine\ndull\n").json()
    assert body["results"][0]["examples"] == 2 and body["results"][0]["accuracy"] is None


@pytest.mark.parametrize("content, status, words", [
    (b"", 422, ["empty"]),
    (b"text,label\ncaf\xe9,pos\n", 400, ["not UTF-8", "0xe9"]),
    (b"sentence,label\nfine,pos\n", 422, ["text column", "found: sentence, label"]),
    (b"text,label\nfine,pos\n,neg\n", 422, ["CSV line 3", "empty"]),
    (b"text,label\nfine,great\n", 422, ["CSV line 2", "unknown label 'great'"]),
    (b'text\n"' + b"x" * 200_000 + b'"\n', 400, ["malformed CSV"]),
    (b"text\n" + b"fine\n" * (MAX_BODY_BYTES // 5), 413, ["limit"]),
])
def test_bad_csv_uploads_get_a_clear_message(client, content, status, words):
    assert_clear_error(upload(client, content), status, *words)


def test_csv_upload_without_a_file_is_a_clear_422(client):
    assert_clear_error(client.post("/batch/csv", data={"models": ""}), 422, "file")


# --- the page and the docs -----------------------------------------------------------------------------------------
def test_page_assets_and_openapi_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/batch", "/batch/csv", "/models", "/health", "/examples"} <= set(paths)
    assert client.get("/docs").status_code == 200
    assert json.dumps(paths["/predict"]["post"]["responses"]).count("ErrorMessage") >= 3


def test_api_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in page.text
    assert "cdn." not in page.text
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs-static/..%2F..%2F__init__.py").status_code == 404
