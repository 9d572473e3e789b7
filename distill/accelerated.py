"""The teacher's fine-tune on several processes, GPUs or machines, with Hugging Face accelerate:

    accelerate launch -m distill --profile full --set teacher.gradient_accumulation=2

    [teacher]
    gradient_accumulation = 1   # batches per optimiser step on each process
    mixed_precision = "no"      # no | fp16 | bf16

`teacher.fine_tune` is one loop for every case. An optimiser step takes `processes x gradient_accumulation` of the
epoch's length-bucketed batches in a row, `gradient_accumulation` of them on each process, and DDP averages the
gradients. Only the main process runs the pipeline. The others are helpers: from the start of `python -m distill`
they wait for the job that the main process hands over from inside `fine_tune` (the function itself with its model,
tokenizer, data and settings, pickled through the process group), so they need neither the artifacts nor a shared
disk, and they leave once the teacher is trained, or found cached. The main process alone writes checkpoints and the
model, and decides when to stop early. This module knows nothing of the teacher: it only hands a job over.

One process with the default options does not use accelerate at all (`Plain`): the loop runs as it always did, bit
for bit, and accelerate need not be installed.
"""
from __future__ import annotations

import contextlib
import math
import os
from datetime import timedelta

from .errors import UserError, one_line_errors

PRECISIONS = ("no", "fp16", "bf16")
# Helpers wait while the main process builds the data stage and loads the teacher: allow a slow data set.
HELPER_WAIT = timedelta(hours=2)
MISSING = ("more than one process, teacher.gradient_accumulation and teacher.mixed_precision need Hugging Face "
           "accelerate; install it with `pip install .[scale]`")
_handed_over = False   # the main process has given the helpers their job (or told them there is none)


def options(cfg: dict) -> tuple[int, str]:
    """(gradient_accumulation, mixed_precision) of a [teacher] section, checked."""
    accumulation, precision = cfg.get("gradient_accumulation", 1), cfg.get("mixed_precision", "no")
    if not isinstance(accumulation, int) or isinstance(accumulation, bool) or accumulation < 1:
        raise UserError(f"teacher.gradient_accumulation must be a whole number of at least 1, not {accumulation!r}")
    if precision not in PRECISIONS:
        raise UserError(f"teacher.mixed_precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return accumulation, precision


def launched_processes() -> int:
    """How many processes `accelerate launch` (or torchrun) started; 1 for a plain `python -m distill`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Plain:
    """What `fine_tune` asks of an `accelerate.Accelerator`, for one process with the default options: the calls the
    loop made before accelerate, unchanged."""
    num_processes, process_index, is_main_process, sync_gradients = 1, 0, True, True

    def __init__(self):
        from .training_loop import device
        self.device = device()

    def prepare(self, *objects):
        return objects

    def accumulate(self, model):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        import torch
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def unwrap_model(self, model, keep_fp32_wrapper=True):
        return model


def accelerator_for(cfg: dict):
    """An `accelerate.Accelerator` for this fine-tune, or `Plain()` for one process with the default options."""
    accumulation, precision = options(cfg)
    if launched_processes() == 1 and accumulation == 1 and precision == "no":
        return Plain()
    accelerate = _accelerate()
    try:
        return accelerate.Accelerator(gradient_accumulation_steps=accumulation, mixed_precision=precision)
    except ValueError as exc:   # e.g. fp16 on a machine without a GPU
        raise UserError(f"accelerate cannot train with teacher.mixed_precision = {precision!r} here "
                        f"({str(exc).splitlines()[0][:160]}); set it to \"no\" or \"bf16\"") from None


def describe(accelerator, cfg: dict) -> dict:
    """For the teacher stage's info."""
    accumulation, precision = options(cfg)
    return {"processes": accelerator.num_processes, "gradient_accumulation": accumulation,
            "mixed_precision": precision}


def step_batches(accelerator, batches: list, accumulation: int) -> list[list]:
    """This process's batches of each optimiser step of an epoch. A step takes `processes x accumulation` batches in
    a row, `accumulation` of them here; the last step of an epoch wraps round to its first batches, so that every
    process always has its full share."""
    processes = accelerator.num_processes
    per_step = processes * accumulation
    return [[batches[(step * per_step + turn * processes + accelerator.process_index) % len(batches)]
             for turn in range(accumulation)] for step in range(math.ceil(len(batches) / per_step))]


def from_main(accelerator, value):
    """`value` as the main process has it, on every process (a pickled broadcast; `value` itself on one process)."""
    return value if accelerator.num_processes == 1 else _broadcast(value)


def hand_over(accelerator, function, *args, **kwargs) -> None:
    """On the main process of a launch: give the helpers, waiting in `help_fine_tune`, the same job,
    `function(*args, **kwargs)` (pickled by reference: the helpers import it). They evaluate with plain accuracy,
    whatever the main process's metric: its early-stopping decision is the one used."""
    global _handed_over
    if accelerator.num_processes > 1 and accelerator.is_main_process:
        _broadcast({"function": function, "args": args, "kwargs": kwargs})
        _handed_over = True


def release_helpers() -> None:
    """On the main process of a launch, once the teacher stage is done: helpers still waiting for a job (the teacher
    was cached, or used as it is) are told there is none."""
    global _handed_over
    if launched_processes() > 1 and not _handed_over and _state().is_main_process:
        _broadcast(None)
        _handed_over = True


@one_line_errors
def main_or_help(main) -> int:
    """`python -m distill`: `main()`, or in the other processes of `accelerate launch`, `help_fine_tune()`."""
    return help_fine_tune() if is_helper() else main()


def is_helper() -> bool:
    """True in every process of `accelerate launch -m distill` but the main one (joining the process group)."""
    return launched_processes() > 1 and not _state().is_main_process


def help_fine_tune() -> int:
    """A helper's whole run: take the main process's fine-tune job, train its share of every step, leave (status 0)."""
    import transformers
    transformers.logging.set_verbosity_error()   # the main process speaks for the fine-tune
    job = _broadcast(None)
    if job is not None:
        job["function"](*job["args"], **job["kwargs"], progress=False, log=lambda *_: None)
    return 0


def _accelerate():
    try:
        import accelerate
    except ImportError:
        raise UserError(MISSING) from None
    return accelerate


def _state():
    """This process's place in the launch (joining the process group on first use)."""
    accelerate = _accelerate()
    from accelerate.utils import parse_flag_from_env
    state = accelerate.PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=HELPER_WAIT)
    if state.num_processes != launched_processes():
        raise UserError(f"accelerate started {launched_processes()} processes but they do not form one group; "
                        "launch with `accelerate launch --multi_gpu ...` (GPUs) or `accelerate launch --cpu ...`")
    return state


def _broadcast(value):
    from accelerate.utils import broadcast_object_list
    return broadcast_object_list([value])[0]
