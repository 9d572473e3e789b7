"""`make serve`: a web page and JSON API that run one text (or a batch) through the teacher and every student side
by side, with latency, speedup and how close each model's probabilities are to the teacher's.

    python -m serve --profile default --port 8000      # http://127.0.0.1:8000, API docs at /docs
"""
from .app import create_app
from .models import Example, Loaded, Missing, load_profile, load_run, model_loaders

__all__ = ["create_app", "Example", "Loaded", "Missing", "load_profile", "load_run", "model_loaders"]
