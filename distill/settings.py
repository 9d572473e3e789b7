"""Typed profile sections: what each key of configs/*.toml may hold.

One pydantic model per section, each refusing keys it does not know (`extra="forbid"`) and values of another type
(`strict`: no "2" for 2, no 2.0 for 2; a whole number where a number is expected is fine). A student's section
([students.<name>], and its override [ablation.<name>]) is derived from the student class's `get_params()`, so the
two cannot drift. The values themselves live in configs/default.toml, which every profile inherits: the section
models hold no defaults, so no value is written twice (a student's table may set any of its class's parameters and
leaves the rest to the class).

Validation checks, it does not convert: the profile's plain dicts flow on unchanged (config.py), so the stage keys
hashed from them stay what they were.
"""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Optional, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

ENGINES = ("local", "ray")   # where the teacher's logits are computed (labelling.py)


def _bounded(test, phrase: str) -> AfterValidator:
    """A range check whose error reads `<key> <phrase>`."""
    def check(value):
        if not test(value):
            raise PydanticCustomError("range", phrase)
        return value
    return AfterValidator(check)


Positive = Annotated[float, _bounded(lambda v: v > 0, "must be greater than 0")]
PositiveInt = Annotated[int, _bounded(lambda v: v > 0, "must be greater than 0")]
NonNegative = Annotated[float, _bounded(lambda v: v >= 0, "must be 0 or more")]
Count = Annotated[int, _bounded(lambda v: v >= 0, "must be a whole number of at least 0")]
AtLeastOne = Annotated[int, _bounded(lambda v: v >= 1, "must be a whole number of at least 1")]
Fraction = Annotated[float, _bounded(lambda v: 0 <= v <= 1, "must be between 0 and 1")]
Widths = Annotated[list[PositiveInt], _bounded(bool, "must list at least one width")]
Share = Annotated[float, _bounded(lambda v: 0 < v <= 1, "must be greater than 0 and at most 1")]
ClassWeight = Literal["none", "balanced"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Data(Section):
    name: str
    text_col: str
    label_col: str
    max_examples: Count
    split: list[Fraction]
    seed: Count

    @field_validator("split")
    @classmethod
    def three_parts(cls, split):
        if len(split) != 3 or abs(sum(split) - 1) > 1e-6 or min(split) <= 0:   # data.make_split's own check
            raise PydanticCustomError("user", "data.split must be three positive fractions summing to 1, got "
                                      "{split}", {"split": str(split)})
        return split


class Teacher(Section):
    model: str
    max_length: PositiveInt
    batch_size: PositiveInt
    epochs: PositiveInt
    max_steps: Count
    min_steps: Count
    lr: Positive
    weight_decay: Fraction
    warmup: Fraction
    patience: Count
    evals_per_epoch: PositiveInt
    seed: Count
    finetune: bool
    label_map: str
    class_weight: ClassWeight
    gradient_accumulation: AtLeastOne
    mixed_precision: Literal["no", "fp16", "bf16"]


def labelling_backend(value: str) -> str:
    """Who computes the teacher's logits: auto, torch, or one of the teacher's exports that can label, as the one
    registry of exports names them (distill/families; imported here, when a profile is checked, not before)."""
    from .families.registry import FAMILIES, TEACHER_FAMILY
    choices = ("auto", "torch", *FAMILIES[TEACHER_FAMILY].labellers())
    if value not in choices:
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": ", ".join(repr(choice) for choice in choices)})
    return value


def transformer_students() -> list[str]:
    """The registered students of the teacher's family: the ones that can be its assistant."""
    from .families.registry import TEACHER_FAMILY
    return [n for n, cls in _students().REGISTRY.items() if getattr(cls, "family", None) == TEACHER_FAMILY]


def assistant_model(value: str) -> str:
    """The teacher assistant (distill/assistant.py): "" (none), "auto", or a transformer-family student trained on
    the split, by its model id (`transformer-distilled`): one trained on the transfer set cannot label it."""
    if value in ("", "auto"):
        return value
    name, _, mode = value.rpartition("-")
    names = transformer_students()
    if name not in names or mode not in ("baseline", "distilled"):
        raise PydanticCustomError("user", "labelling.assistant must be \"\", \"auto\" or a transformer student "
                                  "trained on the split ({choices}), not '{value}'",
                                  {"choices": ", ".join(f"{n}-distilled" for n in names), "value": value})
    return value


class Labelling(Section):
    backend: Annotated[str, AfterValidator(labelling_backend)]
    tolerance: NonNegative
    validation_texts: Count
    batch_size: PositiveInt
    engine: Literal[ENGINES]
    shard_size: AtLeastOne
    actors: Count
    assistant: Annotated[str, AfterValidator(assistant_model)]
    assistant_candidates: list[str]
    assistant_agreement: Fraction
    assistant_tolerance: NonNegative
    assistant_compare: Count
    assistant_compare_student: str

    @field_validator("assistant_compare_student")
    @classmethod
    def registered(cls, name, info):
        return _registered([name], "labelling", info.field_name)[0]

    @field_validator("assistant_candidates")
    @classmethod
    def of_the_teachers_family(cls, names, info):
        transformers = transformer_students()
        others = [n for n in _registered(names, "labelling", info.field_name) if n not in transformers]
        if others:
            raise PydanticCustomError("user", "labelling.assistant_candidates names {others}, not a transformer "
                                      "student; choose from {choices}",
                                      {"others": ", ".join(others), "choices": ", ".join(transformers)})
        return names


class Transfer(Section):
    n_iter: Count
    p_mask: Fraction
    p_sub: Fraction
    p_ng: Fraction
    max_ngram: PositiveInt
    top_k: PositiveInt
    glove_vocab: PositiveInt
    max_size: Count
    unlabelled: str
    unlabelled_col: str
    chunk_size: PositiveInt
    seed: Count

    @model_validator(mode="after")
    def one_change_per_word(self):
        if self.p_mask + self.p_sub > 1:   # augment.check_probabilities' own check
            raise PydanticCustomError("user", "transfer.p_mask + transfer.p_sub must be at most 1, got {total}",
                                      {"total": self.p_mask + self.p_sub})
        return self


class Export(Section):
    skip: list[str]   # family/backend pairs
    calibration_texts: PositiveInt


class Eval(Section):
    metric: str       # parsed against the data's labels once they are known (metrics.Metric.parse)
    bootstrap: PositiveInt
    seed: Count


def _students():
    """distill.students, imported when first needed: it brings torch (seconds), which `--help` and the tools that
    only read a profile never need. Read at each check, so a student registered later (a test, a plugin) counts."""
    from . import students
    return students


def _registered(names: list[str], section: str, key: str) -> list[str]:
    registry = _students().REGISTRY
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise PydanticCustomError("user", "unknown student(s) {unknown} in {where}; choose from {known}",
                                  {"unknown": ", ".join(n if n.isprintable() else repr(n) for n in unknown),
                                   "where": f"{section}.{key}",
                                   "known": ", ".join(registry)})
    return names


class StudentsBase(Section):
    """[students]; one table per student is added by `profile_model`."""
    names: list[str]
    modes: list[Literal["baseline", "distilled"]]
    ensemble: list[str]        # averaged probabilities, built for each mode
    class_weight: ClassWeight

    @field_validator("names", "ensemble")
    @classmethod
    def registered(cls, names, info):
        return _registered(names, "students", info.field_name)


class AblationBase(Section):
    """[ablation]; one table of overrides per student is added by `profile_model`."""
    students: list[str]
    anneal: list[str]
    born_again: bool

    @field_validator("students", "anneal")
    @classmethod
    def registered(cls, names, info):
        return _registered(names, "ablation", info.field_name)


SECTIONS = {"data": Data, "teacher": Teacher, "labelling": Labelling, "transfer": Transfer, "export": Export,
            "eval": Eval}


@functools.cache
def _param_types() -> dict:
    """Types of student parameters by name, for those whose default does not say enough (None) or whose range is
    narrower than "0 or more"; the same name means the same thing in every student."""
    from .losses import LOSSES   # torch, too: imported when first needed, as `_students`
    from .students.transformer import INITS, LAYER_CHOICES
    positive = {"C", "lr", "temperature"}
    positive_int = {"hidden", "filters", "max_length", "epochs", "batch_size", "pca_dims", "max_features", "max_iter"}
    fractions = {"dropout", "warmup", "weight_decay"}
    return {**{k: Positive for k in positive}, **{k: PositiveInt for k in positive_int},
            **{k: Fraction for k in fractions}, "ffn_keep": Share, "widths": Widths, "loss": Literal[LOSSES],
            "init": Literal[INITS], "layer_choice": Literal[LAYER_CHOICES]}


def param_type(name: str, default) -> Any:
    """The type of a student parameter: by its name, else by its default (a bool, 0 or more, text)."""
    if name in _param_types():
        return _param_types()[name]
    by_default = {bool: bool, int: Count, float: NonNegative, str: str}
    return by_default.get(type(default), Any)


@functools.cache
def student_settings(cls) -> type[Section]:
    """The section model of a student class: its `get_params()` less what the run sets."""
    params = {k: v for k, v in cls().get_params().items() if k not in _students().RUN_PARAMS}
    fields = {k: (param_type(k, v), v) for k, v in params.items()}
    return create_model(f"{cls.__name__}Settings", __base__=Section, **fields)


def profile_model() -> type[Section]:
    """The model of a whole profile, for the students registered now."""
    return _profile_model(tuple(_students().REGISTRY.items()))


@functools.cache
def _profile_model(registry: tuple) -> type[Section]:
    tables = {name: (Optional[student_settings(cls)], None) for name, cls in registry}
    students = create_model("Students", __base__=StudentsBase, **tables)
    # [ablation] born_again is the switch for the student of that name, so it has no table of overrides
    ablation = create_model("Ablation", __base__=AblationBase,
                            **{k: v for k, v in tables.items() if k not in AblationBase.model_fields})
    sections = {**SECTIONS, "students": students, "ablation": ablation}
    order = ("data", "teacher", "labelling", "students", "transfer", "ablation", "export", "eval")
    return create_model("Profile", __base__=Section, **{name: (sections[name], ...) for name in order})


def model_at(path) -> type[BaseModel] | None:
    """The model of the table at `path` (("students", "bilstm") -> the BiLSTM's settings); None if not a table."""
    model = profile_model()
    for key in path:
        field = model.model_fields.get(key)
        candidates = (field.annotation, *get_args(field.annotation)) if field else ()
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def field_type(path):
    """The declared type of the key at `path` (float, str, a Literal, ...); None if there is no such key."""
    model = model_at(path[:-1])
    field = model.model_fields.get(path[-1]) if model else None
    return field.annotation if field else None
