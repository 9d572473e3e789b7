"""`mbtb serve --package DIR`: one package (`mbtb package`) behind the same page and API, so what will be deployed
can be tried first. It is loaded by the harness's copy of the package runtime (ship/runtime/predict.py, which imports
nothing from the harness): the package's files are checked against its manifest and read, none of its code runs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.families.predictor import Predictor
from distill.errors import UserError
from ship.runtime.predict import Classifier, PackageError

from .models import Loaded, check_predictor


@dataclass
class PackagedPredictor(Predictor):
    """A package's Classifier as a bench Predictor: the same prepare / run split."""
    classifier: Classifier = None

    def prepare(self, texts):
        return self.classifier.prepare(texts)

    def run(self, prepared):
        return self.classifier.run(prepared)


def load_package(directory: str | Path, threads: int = 1, log=print) -> Loaded:
    try:
        classifier = Classifier.load(directory, threads)
    except PackageError as exc:
        raise UserError(str(exc)) from None
    info = classifier.info
    predictor = PackagedPredictor(info["model"], info["backend"], classifier.labels, info["kind"],
                                  classifier=classifier)
    check_predictor(predictor, "a warm-up sentence", len(classifier.labels))
    log(f"package {directory}: loaded {predictor.name} (run {info['run']})")
    return Loaded(f"package {Path(directory).name}", predictors=[predictor], labels=classifier.labels)
