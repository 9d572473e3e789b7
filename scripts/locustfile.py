"""Locust load test of `make serve` (headless; driven by scripts/loadtest.py, which starts the server and records the
machine's load beside the numbers).

Users: `Predictor`s post test-split sentences to /predict and check every answer (each model answers, probabilities
sum to 1, the label is their argmax); one in ten of their requests is bad input that must get its documented 4xx.
With LOADTEST_BATCH_USER=1, one `BatchUser` keeps a maximal /batch running and a `HealthUser` polls /health, to
show that a long batch holds nobody hostage.

    locust -f scripts/locustfile.py --headless -u 50 -r 50 -t 60s --host http://127.0.0.1:8000 --csv /tmp/lt
"""
from __future__ import annotations

import json
import os
import random

from locust import HttpUser, constant, events, task

BAD_REQUESTS = [  # (body, content type, expected status)
    (json.dumps({"text": ""}), "application/json", 422),
    (json.dumps({"text": "x" * 10_001}), "application/json", 422),
    ('{"text": "unterminated', "application/json", 400),
    (json.dumps({"text": "fine", "models": ["no-such-model"]}), "application/json", 422),
    (b'{"text": "caf\xe9"}', "application/json", 400),
]
WITH_BATCH = os.environ.get("LOADTEST_BATCH_USER") == "1"
shared: dict = {}


@events.test_start.add_listener
def fetch_examples(environment, **_):
    import httpx
    host = environment.host
    shared["texts"] = [e["text"] for e in httpx.get(f"{host}/examples", timeout=60).json()] or ["a fine film"]
    shared["models"] = [m["name"] for m in httpx.get(f"{host}/models", timeout=60).json()["models"]]


def problem_with(body: dict) -> str | None:
    if [r["name"] for r in body["results"]] != shared["models"]:
        return "wrong set of models in the answer"
    for r in body["results"]:
        probs = r["probabilities"]
        if abs(sum(probs) - 1) > 1e-3 or r["label"] != body["labels"][probs.index(max(probs))]:
            return f"inconsistent result for {r['name']}"
    return None


class Predictor(HttpUser):
    wait_time = constant(0)
    weight = 50

    @task(9)
    def predict(self):
        text = f"{random.choice(shared['texts'])} {random.randint(0, 10**6)}"   # vary it: no cache can help
        with self.client.post("/predict", json={"text": text, "repeats": 1}, catch_response=True,
                              name="/predict") as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
            elif (problem := problem_with(response.json())) is not None:
                response.failure(problem)

    @task(1)
    def bad_input(self):
        body, content_type, status = random.choice(BAD_REQUESTS)
        with self.client.post("/predict", data=body, headers={"content-type": content_type}, catch_response=True,
                              name="/predict (bad input)") as response:
            if response.status_code == status and isinstance(response.json().get("detail"), str):
                response.success()
            else:
                response.failure(f"bad input got {response.status_code}, expected {status}")


if WITH_BATCH:
    class BatchUser(HttpUser):
        """A maximal /batch (the server's row and character limits), again and again."""
        wait_time = constant(0)
        fixed_count = 1

        @task
        def batch(self):
            from serve.schemas import MAX_BATCH_CHARS, MAX_BATCH_ROWS
            rows = min(MAX_BATCH_ROWS, MAX_BATCH_CHARS // 100)
            texts = [("x" * 99 + str(i))[:100] for i in range(rows)]
            with self.client.post("/batch", json={"texts": texts}, catch_response=True, name="/batch (maximal)") as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}")

    class HealthUser(HttpUser):
        wait_time = constant(0.2)
        fixed_count = 1

        @task
        def health(self):
            self.client.get("/health", name="/health")
