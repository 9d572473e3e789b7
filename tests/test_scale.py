"""Issue 13, beyond one machine: labelling on Ray Data, the teacher's fine-tune under Hugging Face accelerate.

Accelerate's tests run first: `debug_launcher` forks this process, which must not have started Ray yet."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from distill import accelerated, labelling
from distill import teacher as T
from distill.errors import UserError
from distill.pipeline import Run
from distill.ray_labelling import label_in_shards, plan_actors
from tests.conftest import tiny_config
from tests.test_students import synthetic
from tests.test_teacher import CFG, new_bert

SHORT = {**CFG, "max_steps": 40, "evals_per_epoch": 2}
# Ray Data copies its context and so reads its own deprecated settings: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


# --- without the extra: one-line errors ---------------------------------------------------------------------------

def test_missing_ray_or_accelerate_is_a_one_line_error_naming_the_extra(monkeypatch, fresh_bert):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(UserError, match=r"needs Ray Data; install it with `pip install \.\[scale\]`"):
        labelling.settings({"labelling": {"engine": "ray"}})
    tokenizer, model = fresh_bert
    with pytest.raises(UserError, match=r"need Hugging Face accelerate; install it with `pip install \.\[scale\]`"):
        T.fine_tune(model, tokenizer, *task_data(), {**SHORT, "gradient_accumulation": 2}, progress=False)


@pytest.mark.parametrize("section, key, value, message", [
    ("labelling", "engine", "spark", "labelling.engine must be one of local, ray"),
    ("labelling", "shard_size", 0, "labelling.shard_size must be a whole number of at least 1"),
    ("teacher", "mixed_precision", "fp8", "teacher.mixed_precision must be one of no, fp16, bf16"),
    ("teacher", "gradient_accumulation", 0, "teacher.gradient_accumulation must be a whole number of at least 1"),
])
def test_bad_scale_settings_are_refused(section, key, value, message):
    check = labelling.settings if section == "labelling" else (lambda cfg: accelerated.options(cfg["teacher"]))
    with pytest.raises(UserError, match=message):
        check({section: {key: value}})


def test_ray_actor_plan():
    """One GPU actor per GPU for the PyTorch teacher; ONNX backends and CPU-only clusters get CPU actors."""
    assert plan_actors({"CPU": 32, "GPU": 4}, 0, 100, "torch") == {"actors": 4, "num_gpus": 1, "num_cpus": 4}
    assert plan_actors({"CPU": 32, "GPU": 4}, 0, 100, "onnx-int8") == {"actors": 8, "num_gpus": 0, "num_cpus": 4}
    assert plan_actors({"CPU": 2}, 0, 100, "torch") == {"actors": 1, "num_gpus": 0, "num_cpus": 2}
    assert plan_actors({"CPU": 16}, 3, 100, "torch") == {"actors": 3, "num_gpus": 0, "num_cpus": 5}
    assert plan_actors({"CPU": 16}, 0, 2, "torch")["actors"] == 2    # never more actors than shards


# --- accelerate -----------------------------------------------------------------------------------------------------

def task_data():
    return synthetic(320, 0), synthetic(100, 1)


@pytest.fixture()
def fresh_bert(tmp_path):
    return new_bert(tmp_path / "bert", task_data())


def without_dropout(model):
    """Two processes draw the same dropout masks, one process draws new ones for its second batch: with dropout off,
    one process accumulating 2 batches and two processes taking one each do the same arithmetic."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):   # BERT's SDPA attention reads a float, not its Dropout module
            module.dropout_prob = 0.0
    return model


@pytest.fixture()
def accelerate_state():
    """Accelerate keeps its state in process-wide singletons: start and end each test without one."""
    pytest.importorskip("accelerate", reason="the accelerate path needs `pip install .[scale]`")
    from accelerate.state import AcceleratorState, GradientState
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_accelerate_on_one_process_is_the_plain_loop_bit_for_bit(accelerate_state, tmp_path, monkeypatch):
    """Forced through a real Accelerator (prepare, accumulate, backward, clip), one process with the default options
    ends with exactly the weights of the plain loop."""
    from accelerate import Accelerator
    weights = []
    for attempt, force in enumerate((False, True)):
        if force:
            monkeypatch.setattr(accelerated, "accelerator_for", lambda cfg: Accelerator())
        tokenizer, model = new_bert(tmp_path / f"bert{attempt}", task_data())
        metrics = T.fine_tune(model, tokenizer, *task_data(), SHORT, progress=False)
        weights.append(model.state_dict())
    assert metrics["steps"] == SHORT["max_steps"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def fine_tune_on_two_processes(out_path, bert_dir):
    """What `accelerate launch -m distill` does in each process (distill/__main__.py), on the tiny task."""
    if accelerated.is_helper():
        accelerated.help_fine_tune()
        return
    tokenizer, model = T.load_pretrained(str(bert_dir), 2, ["neg", "pos"])
    train, dev = task_data()
    metrics = T.fine_tune(without_dropout(model), tokenizer, train, dev, SHORT, progress=False)
    logits = T.predict_logits(model, tokenizer, dev[0], SHORT["max_length"], progress=False)
    out_path.write_text(json.dumps({"metrics": metrics, "logits": logits.tolist()}))


def release_on_two_processes():
    """A cached teacher: the main process has no fine-tune to share and tells the helper, which leaves."""
    if accelerated.is_helper():
        assert accelerated.help_fine_tune() == 0
    else:
        accelerated.release_helpers()


def test_two_processes_train_the_teacher_to_the_accuracy_of_one(accelerate_state, tmp_path, fresh_bert, monkeypatch):
    """Two CPU processes (DDP), one batch each per step, against one process accumulating two batches per step:
    the same batches make each step, so dev accuracy agrees within 0.02 (2 of 100 texts) and the dev logits within
    1e-4 (the gradients are summed in another order: 7e-7 apart here)."""
    from accelerate import debug_launcher
    from accelerate.state import AcceleratorState
    monkeypatch.setenv("OMP_NUM_THREADS", "1")   # else accelerate gives each process all the cores
    debug_launcher(release_on_two_processes, num_processes=2)
    debug_launcher(fine_tune_on_two_processes, (tmp_path / "two.json", tmp_path / "bert"), num_processes=2)
    two = json.loads((tmp_path / "two.json").read_text())
    AcceleratorState._reset_state(reset_partial_state=True)

    tokenizer, model = fresh_bert
    train, dev = task_data()
    one = T.fine_tune(without_dropout(model), tokenizer, train, dev, {**SHORT, "gradient_accumulation": 2},
                      progress=False)
    logits = T.predict_logits(model, tokenizer, dev[0], SHORT["max_length"], progress=False)
    assert two["metrics"]["processes"] == 2 and one["processes"] == 1 and one["gradient_accumulation"] == 2
    assert two["metrics"]["steps"] == one["steps"] == SHORT["max_steps"]
    assert one["best_dev_accuracy"] > 0.9
    assert abs(two["metrics"]["best_dev_accuracy"] - one["best_dev_accuracy"]) <= 0.02
    np.testing.assert_allclose(np.array(two["logits"]), logits, atol=1e-4)


# --- Ray Data -------------------------------------------------------------------------------------------------------

RAY = ['labelling.engine="ray"', "labelling.shard_size=40"]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local 2-CPU cluster for the module (starting one takes most of this file's time)."""
    ray = pytest.importorskip("ray", reason="labelling on Ray needs `pip install .[scale]`")
    pytest.importorskip("ray.data", reason="labelling on Ray needs Ray Data: `pip install .[scale]`")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def texts(mr_texts):
    return mr_texts[:200]   # 5 shards of 40


@pytest.fixture(scope="module")
def torch_labeller(sensitive_teacher):
    return labelling.Labeller("torch", None, sensitive_teacher, 48, 16)


def tiny_run(tmp_path, teacher_dir, extra=()) -> Run:
    return Run("tiny", tiny_config(teacher_dir, list(extra)), tmp_path / "artifacts", tmp_path / "reports",
               progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory, sensitive_teacher, torch_labeller, texts):
    """The soft labels' call (`labelling.label_texts`) on Ray, in one go."""
    run = tiny_run(tmp_path_factory.mktemp("ray-run"), sensitive_teacher, RAY)
    logits = labelling.label_texts(run, torch_labeller, texts, "soft_labels").logits
    assert not (run.dir / ".soft_labels.partial").exists()   # removed once every shard is in
    return logits


def test_ray_labels_like_the_local_path(uninterrupted, tmp_path, sensitive_teacher, torch_labeller, texts):
    """The same PyTorch teacher, batched within 40-text shards instead of over all 200 texts: equal within 1e-5."""
    local = labelling.label_texts(tiny_run(tmp_path, sensitive_teacher), torch_labeller, texts, "soft_labels").logits
    assert uninterrupted.shape == local.shape == (len(texts), 2)
    assert np.ptp(local[:, 1] - local[:, 0]) > 0.1   # the texts get clearly different logits
    np.testing.assert_allclose(uninterrupted, local, atol=1e-5)


def test_a_failed_ray_run_resumes_from_its_finished_shards(uninterrupted, tmp_path, torch_labeller, texts):
    """A replica fails on the last shard (a text that is not a string): the other four are saved, the run stops with
    a one-line error naming the cause, and the next run labels only that shard, to the logits of an uninterrupted
    run."""
    c = labelling.settings({"labelling": {"engine": "ray", "shard_size": 40}})
    partial = tmp_path / ".soft_labels.partial"
    partial.mkdir()
    broken = list(texts)
    broken[-3] = None
    with pytest.raises(UserError, match=r"labelling on Ray failed for 1 of 5 shards \(\w+Error: .*\); the others"):
        label_in_shards(broken, torch_labeller, partial, c, progress=False, log=lambda *_: None)
    finished = sorted(path.name for path in partial.glob("shard-*.parquet"))
    assert finished == [f"shard-0000{n}.parquet" for n in range(4)]
    logits, _, reused = label_in_shards(texts, torch_labeller, partial, c, progress=False, log=lambda *_: None)
    assert reused == 4 and len(list(partial.glob("shard-*.parquet"))) == 5
    np.testing.assert_allclose(logits, uninterrupted, atol=1e-6)
