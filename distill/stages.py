"""The stage graph: every stage of a run, declared once with what its key hashes and how it is built.

    data -> teacher -> labeller -> soft_labels -> students/<student>-<baseline|distilled> -> evaluation
                                             \\-> [assistant ->] transfer -> students/<student>-<augmented|annealed>

A stage's `inputs(run)` are its settings and the keys of the stages it reads, so changing anything upstream rebuilds
it and everything downstream (distill/store.py keeps them). `mbtb distill` builds the spine and its evaluation
(`spine`); `mbtb ablation` the same upstream stages, its students' twins, the transfer set and the students trained
on it (`plan` with the ablation's modes). Every student, whatever it learns from, is built by the one student stage
(distill/student_stage.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from . import assistant, assistant_comparison, evaluation, labelling, transfer, upstream
from . import students as student_zoo
from .catalogue import MODES, TRANSFER_MODES, parse_model_id
from .errors import UserError
from .student_stage import build_student, student_inputs


@dataclass(frozen=True)
class Stage:
    name: str                            # its directory under artifacts/<run>/
    title: str                           # its line in the progress log
    inputs: Callable[..., dict]          # (run) -> what its key hashes
    build: Callable[..., dict]           # (run, tmp directory, inputs) -> its info, its files written into tmp
    done: Callable = lambda run, info: None   # (run, info) -> what follows, built or cached: a log line, a report


DATA = Stage("data", "data", upstream.data_inputs, upstream.build_data, upstream.data_done)
TEACHER = Stage("teacher", "teacher", upstream.teacher_inputs, upstream.build_teacher, upstream.teacher_done)
LABELLER = Stage("labeller", "labeller", labelling.labeller_inputs, labelling.build_labeller, labelling.labeller_done)
SOFT_LABELS = Stage("soft_labels", "soft labels", upstream.soft_labels_inputs, upstream.build_soft_labels)
ASSISTANT = Stage("assistant", "teacher assistant", assistant.assistant_inputs, assistant.build_assistant,
                  assistant.assistant_done)
ASSISTANT_COMPARISON = Stage("assistant_comparison", "teacher assistant's labels vs the teacher's",
                             assistant_comparison.comparison_inputs, assistant_comparison.build_comparison,
                             assistant_comparison.comparison_done)
TRANSFER = Stage("transfer", "transfer set", transfer.transfer_inputs, transfer.build_transfer, transfer.transfer_done)
EVALUATION = Stage("evaluation", "evaluation on the test split", evaluation.evaluation_inputs,
                   evaluation.build_evaluation, evaluation.evaluation_done)


def student(name: str, mode: str, mix=None) -> Stage:
    """`students/<name>-<mode>`; `mix(targets, reference)` anneals a student that cannot follow a schedule."""
    return Stage(f"students/{name}-{mode}", f"student {name} ({mode})", partial(student_inputs, name=name, mode=mode),
                 partial(build_student, mix=mix))


def plan(students: dict[str, list[str]], mix=None, assistants: list[str] | None = None) -> list[Stage]:
    """The stages that make `students` (name -> its training modes), in build order: the upstream stages, mode by
    mode the students trained on the split, then the transfer set and the students trained on it. `assistants`:
    the teacher assistant's candidates (distill/assistant.py), checked before the transfer set; None: no assistant."""
    modes = list(dict.fromkeys(mode for wanted in students.values() for mode in wanted))
    modes = [m for m in modes if m not in TRANSFER_MODES] + [m for m in modes if m in TRANSFER_MODES]
    stages = [DATA, TEACHER, LABELLER, SOFT_LABELS]
    for mode in modes:
        if mode in TRANSFER_MODES and TRANSFER not in stages:
            stages += assistant_stages(stages, assistants)
            stages.append(TRANSFER)
        stages += [student(name, mode, mix) for name, wanted in students.items() if mode in wanted]
    return stages


def assistant_stages(planned: list[Stage], assistants: list[str] | None) -> list[Stage]:
    """The candidate students not yet in `planned`, then the `assistant` stage that checks them."""
    if assistants is None:
        return []
    names = {stage.name for stage in planned}
    missing = [parse_model_id(m) for m in assistants if f"students/{m}" not in names]
    return [student(m.student, m.mode) for m in missing] + [ASSISTANT]


def spine(run) -> list[Stage]:
    """What `mbtb distill` builds: `students.names` x `students.modes`, and their evaluation."""
    names, modes = run.cfg["students"]["names"], run.cfg["students"]["modes"]
    if not names or not modes:
        raise UserError("no students to train (students.names or students.modes is empty); name at least one, "
                        f"e.g. --students {','.join(student_zoo.REGISTRY)}")
    unknown = [n for n in names if n not in student_zoo.REGISTRY]
    if unknown:
        raise UserError(f"unknown student(s) {', '.join(unknown)}; choose from {', '.join(student_zoo.REGISTRY)}")
    others = sorted(set(modes) - set(MODES))
    if others:
        raise UserError(f"students.modes takes {' and '.join(MODES)}, not {', '.join(others)}; the students trained "
                        "on the transfer set are built by `mbtb ablation`")
    return plan({name: modes for name in names}) + [EVALUATION]


def build(run, stage: Stage):
    """Build `stage` unless it is cached; returns what its `done` returns."""
    inputs = stage.inputs(run)
    _, info = run.stage(stage.name, inputs, lambda tmp: stage.build(run, tmp, inputs))
    return stage.done(run, info)


def build_all(run, stages: list[Stage], then: str | None = None):
    """Build `stages` in order, numbered in the log (`then`: a last step the caller takes); returns the last's
    `done`."""
    total = len(stages) + (then is not None)
    result = None
    for number, stage in enumerate(stages, 1):
        run.log(f"[{number}/{total}] {stage.title}")
        result = build(run, stage)
    if then is not None:
        run.log(f"[{total}/{total}] {then}")
    return result
