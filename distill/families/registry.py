"""The registry: each model family once, with how it is served natively and the backends it exports to; each backend
once, with its exporter, its loader and its drift rule (how far its probabilities may move from its source's).

Modelled on optimum's exporters, which register each architecture once with its validation tolerance. bench exports,
validates and times what is registered here, serve loads it, and the labeller (distill/labelling.py) chooses the
teacher's labelling backend among the transformer family's, judged by the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError
from .predictor import Predictor

FP32 = 1e-4    # max |p - p_source| of an fp32 export on the validation sentences
INT8 = 0.35    # dynamic int8 moves probabilities; what it costs in accuracy is scored and reported separately
LOSSY_MIN_AGREEMENT = 0.75   # a broken export agrees at chance (50% on two classes); int8 loss stays well above
FAITHFUL, LOSSY, BROKEN = "faithful", "lossy", "broken"
TEACHER_FAMILY = "transformer"


def drift_verdict(max_abs_diff: float, agreement: float, tolerance: float, lossy: bool = False) -> str:
    """The drift rule: FAITHFUL within `tolerance`; past it, LOSSY for a `lossy` backend that still agrees with its
    source on at least LOSSY_MIN_AGREEMENT of the labels (quantisation loss, which its score shows), else BROKEN."""
    if max_abs_diff <= tolerance:
        return FAITHFUL
    return LOSSY if lossy and agreement >= LOSSY_MIN_AGREEMENT else BROKEN


@dataclass(frozen=True)
class Backend:
    """An exported form of a family: `export(source, out_dir, sample_texts)` writes the files,
    `load(out_dir, ctx) -> Predictor` reads them back; `tolerance` and `lossy` are its drift rule (`verdict`).
    `logits(out_dir)`, where set, reads a teacher's export as `fn(texts, max_length, batch_size, progress) -> logits`:
    the labeller may run this backend; `auto_labeller` makes it one that labelling.backend = "auto" tries.
    `calibrated`: its exporter calibrates on every sample text it is given, so how many ([export] calibration_texts)
    joins its exports' keys; the others read at most the first CALIBRATION_TEXTS (distill/int8_onnx.py)."""
    name: str
    export: Callable
    load: Callable
    tolerance: float = FP32
    lossy: bool = False
    logits: Callable | None = None
    version: int = 1   # raised when the exporter's output changes: its cached exports (and labellers) are redone
    auto_labeller: bool = False
    calibrated: bool = False

    def verdict(self, max_abs_diff: float, agreement: float) -> str:
        return drift_verdict(max_abs_diff, agreement, self.tolerance, self.lossy)


@dataclass(frozen=True)
class Family:
    name: str
    title: str                                   # as the report's legend names it
    native_backend: str                          # the backend of the fitted estimator itself
    native: Callable[..., Predictor]             # native(estimator, **meta) -> Predictor
    backends: dict[str, Backend] = field(default_factory=dict)
    marker: str = "o"                            # matplotlib marker on the Pareto plot
    # The lossless backend this family runs fastest in at batch 1 (measured here, docs/results/): an ensemble's
    # `exported` variant runs its members in it. "" = the native one is fastest.
    fastest_lossless: str = ""

    def labellers(self) -> dict[str, Backend]:
        """The backends whose exports the labeller can run."""
        return {name: b for name, b in self.backends.items() if b.logits is not None}

    @property
    def auto_labellers(self) -> tuple[str, ...]:
        """The backends the labeller tries under labelling.backend = "auto": those marked `auto_labeller`."""
        return tuple(name for name, b in self.labellers().items() if b.auto_labeller)


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def add_backend(family_name: str, backend: Backend) -> Backend:
    """One more backend for a registered family: exported, validated, benchmarked and servable like the others."""
    family = FAMILIES.get(family_name)
    if family is None:
        raise UserError(f"no family {family_name!r} to add backend {backend.name!r} to; register the family first "
                        f"or choose one of {', '.join(FAMILIES)}")
    if backend.name in family.backends or backend.name == family.native_backend:
        raise UserError(f"{family_name} already has a backend named {backend.name!r}; give the new one another name")
    family.backends[backend.name] = backend
    return backend


def family_of(estimator) -> Family:
    """The family of a fitted student (`None` is the teacher)."""
    name = TEACHER_FAMILY if estimator is None else getattr(estimator, "family", None)
    if name not in FAMILIES:
        raise UserError(f"{type(estimator).__name__} declares no registered family ({name!r}); set its `family` "
                        f"attribute to one of {', '.join(FAMILIES)} or register one (distill/families/registry.py)")
    return FAMILIES[name]


def native_predictor(model_id: str, estimator, **meta) -> Predictor:
    """A student (or ensemble) served as it was trained."""
    family = family_of(estimator)
    return family.native(estimator, model=model_id, backend=family.native_backend, **meta)
