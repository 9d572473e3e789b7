"""Students: scikit-learn estimators over raw text.

`fit(texts, y)` takes either hard labels (1-D ints: the baseline) or the teacher's logits (2-D floats: the distilled
twin). Every student has `predict` and `predict_proba`, so they compose with scikit-learn tools and with each other.
Each student class declares what callers need to know about it, instead of callers inspecting it:
- `family`: how it is served, exported and validated (distill/families);
- `uses_teacher(params)`: whether, with these parameters, it is built from the teacher's model directory (its
  `teacher` parameter; transformer, static, the BiLSTM with the teacher's embeddings); absent means never;
- `fit_extras`: the keyword arguments its `fit` takes beyond (X, y): `hard_labels` (gold labels beside the teacher's
  logits, for `loss="mix"` and annealing), `eval_set` (the dev split, for early stopping) and `checkpoint` (a file
  its fit saves itself to and resumes from, in the stage's partial directory); absent means none.
- `outside_files(params)`: stamps of files outside the run it reads (a local pretrained `base`), which join its
  stage key; absent means none.
The torch students share one training loop (torch_student.py:TorchStudent). Adding a student is one new file plus
one line in REGISTRY: docs/add-a-student.md.

One class may sit under several names, each its own student with its own [students.<name>] and [ablation.<name>]
tables, stage keys and models: `transformer_deep`, `transformer`, `transformer_small`, `transformer_lean` and
`small_encoder` are all TransformerClassifier, told apart by the values configs/default.toml gives their tables
(three depths of cut from the teacher, a cut with narrower feed-forward blocks, a pretrained MiniLM-L6). Another
depth is one more line here, `"transformer_half": TransformerClassifier`,
and its table in configs/default.toml, `[students.transformer_half]` with `layers = 6` (DistilBERT's half of a
12-layer teacher); list it in `[students] names` or `[ablation] students` to train it.
"""
from ..errors import UserError, did_you_mean
from .bilstm import BiLSTMClassifier
from .cnn import WordCNNClassifier
from .ensemble import AveragingEnsemble
from .linear import TfidfLogisticRegression, TfidfNaiveBayes, TfidfRidge
from .static import StaticEmbeddingClassifier
from .transformer import BornAgainClassifier, TransformerClassifier

REGISTRY = {
    "tfidf_lr": TfidfLogisticRegression,
    "tfidf_ridge": TfidfRidge,
    "nb": TfidfNaiveBayes,
    "bilstm": BiLSTMClassifier,
    "cnn": WordCNNClassifier,
    "transformer": TransformerClassifier,
    "transformer_small": TransformerClassifier,
    "small_encoder": TransformerClassifier,
    "transformer_deep": TransformerClassifier,
    "transformer_lean": TransformerClassifier,
    "born_again": BornAgainClassifier,
    "static": StaticEmbeddingClassifier,
}

# Parameters the run sets (the progress bar, the teacher's directory and a cache beside it, what [students]
# class_weight and [eval] metric imply, the ablation's annealing): never a key of a profile's student section.
RUN_PARAMS = ("progress", "teacher", "memory", "class_weights", "dev_metric", "anneal")


def build(name: str, params: dict):
    """Student `name` with `params`: a profile's [students.<name>] keys, which it must take, and what the run adds
    (`RUN_PARAMS`), which it may not (the progress bar means nothing to a TF-IDF model)."""
    if name not in REGISTRY:
        raise UserError(f"unknown student {name!r}; choose from {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    known = cls().get_params()
    unknown = [k for k in params if k not in known and k not in RUN_PARAMS]
    if unknown:
        raise UserError(f"student {name} has no parameter {unknown[0]!r}{did_you_mean(unknown[0], known)}; "
                        f"known: {', '.join(k for k in known if k not in RUN_PARAMS)}")
    return cls(**{k: v for k, v in params.items() if k in known})


def needs_teacher(name: str, params: dict | None = None) -> bool:
    """Whether the student, with these parameters, is initialised from (and so depends on) the fine-tuned teacher:
    what its class's `uses_teacher(params)` says (the BiLSTM only with `embedding="teacher"`)."""
    uses_teacher = getattr(REGISTRY.get(name), "uses_teacher", None)
    return bool(uses_teacher and uses_teacher(params or {}))


def outside_files(name: str, params: dict) -> list | None:
    """Stamps of the files outside the run that the student, with these parameters, reads (its class's
    `outside_files(params)`: a local pretrained base's); None when there are none."""
    files = getattr(REGISTRY.get(name), "outside_files", None)
    return files(params) if files else None


__all__ = ["REGISTRY", "RUN_PARAMS", "build", "needs_teacher", "outside_files", "BiLSTMClassifier", "AveragingEnsemble",
           "BornAgainClassifier", "StaticEmbeddingClassifier", "TfidfLogisticRegression", "TfidfNaiveBayes",
           "TfidfRidge", "TransformerClassifier", "WordCNNClassifier"]
