"""Labelling on a Ray cluster (`[labelling] engine = "ray"`): Ray Data hands shards of text to a pool of teacher
replicas, one actor per GPU when the cluster has GPUs (and the labeller is the PyTorch teacher), CPU actors otherwise.

What runs where. The driver (`python -m distill`) cuts the texts into shards of `shard_size` and saves each finished
shard as `<partial>/shard-NNNNN.parquet` (its texts and their logits); a rerun after a crash reuses every shard whose
file holds the same texts, and labels only the rest. The unfinished shards go to the actors through Ray's object
store, and so do the labeller's model files (the teacher directory or its ONNX export), so worker nodes need the
project installed (`pip install .[scale]`) but no shared disk and none of the artifacts. `RAY_ADDRESS` joins an
existing cluster (`ray.init()` reads it; `ray://head:10001` goes through Ray Client); without it a local cluster
starts for the call and stops after it.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .atomic import atomic_path
from .errors import UserError

THREADS_PER_CPU_ACTOR = 4   # a CPU-only cluster gets one actor per 4 CPUs (actors = 0)
MISSING = ('labelling.engine = "ray" needs Ray Data; install it with `pip install .[scale]`, or set '
           'labelling.engine = "local"')


def import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError(MISSING) from None
    return ray


class Replica:
    """One teacher replica, in a Ray actor: a `Labeller` built from the model files it is handed, labelling one shard
    (a pandas frame with columns shard, row, text) per call. A shard it cannot label comes back with its error
    instead of failing the Ray task: the driver saves every other shard, and no failed task's error keeps the actor
    (and its CPUs) alive after the run."""

    def __init__(self, files, backend: str, max_length: int, batch_size: int, threads: int):
        import ray
        import torch

        from .labeller import Labeller
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="distill-replica-") as tmp:   # loaded, so no longer needed
            root = Path(tmp)
            model_dir = root / ("teacher" if backend == "torch" else backend)
            for name, blob in ray.get(files).items():
                (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
                (model_dir / name).write_bytes(blob)
            self.label = Labeller(backend, root, model_dir, max_length, batch_size)

    def __call__(self, shard: pd.DataFrame) -> pd.DataFrame:
        out = shard[["shard", "row"]].reset_index(drop=True)
        try:
            out["logits"], out["error"] = list(self.label(shard["text"].tolist())), ""
        except Exception as exc:
            out["logits"], out["error"] = [[] for _ in range(len(out))], f"{type(exc).__name__}: {exc}"
        return out


def label_in_shards(texts: list[str], label, partial: Path, c: dict, progress=True, log=print):
    """`label`'s logits on `texts` (its backend and model, replicated on a Ray cluster), shard by shard; each finished
    shard is saved under `partial` (a stage's partial directory, emptied by its owner when the stage's key changes)
    and reused by a later call. Returns (logits, seconds spent labelling here, shards reused)."""
    ray = import_ray()
    if not texts:
        return label(texts), 0.0, 0
    size = c["shard_size"]
    shards = [texts[start:start + size] for start in range(0, len(texts), size)]
    done = {n: _load_shard(_shard_path(partial, n), shard) for n, shard in enumerate(shards)}
    done = {n: logits for n, logits in done.items() if logits is not None}
    todo = [n for n in range(len(shards)) if n not in done]
    reused = len(done)
    started = time.time()
    if todo:
        bar = tqdm(total=len(texts), initial=sum(len(shards[n]) for n in done), desc="labels on Ray", unit="text",
                   disable=not progress)
        with _cluster(ray):
            plan = plan_actors(ray.cluster_resources(), c["actors"], len(todo), label.backend)
            log(f"  labelling: {len(todo)} of {len(shards)} shards on Ray Data, {plan['actors']} "
                f"{'GPU' if plan['num_gpus'] else 'CPU'} actor(s) x {plan['num_cpus']} CPU(s)"
                + (f", {reused} shard(s) reused from an earlier run" if reused else ""))
            errors = []
            for n, logits, error in _label_on_ray(ray, {n: shards[n] for n in todo}, label, plan):
                if error:
                    errors.append(error)
                    continue
                frame = pd.DataFrame({"text": shards[n]})
                for k in range(logits.shape[1]):
                    frame[f"logit_{k}"] = logits[:, k]
                with atomic_path(_shard_path(partial, n)) as tmp:
                    frame.to_parquet(tmp, index=False)
                done[n] = logits
                bar.update(len(shards[n]))
        bar.close()
        if errors:
            raise UserError(f"labelling on Ray failed for {len(errors)} of {len(shards)} shards "
                            f"({errors[0].splitlines()[0][:200]}); the others are saved: a rerun labels only those")
    return np.concatenate([done[n] for n in range(len(shards))]), time.time() - started, reused


def _label_on_ray(ray, todo: dict[int, list[str]], label, plan: dict):
    """Yields (shard number, logits, error) as the actors finish shards, in whatever order they finish."""
    frames = [pd.DataFrame({"shard": n, "row": np.arange(len(shard)), "text": shard}) for n, shard in todo.items()]
    files = ray.put(_model_files(label))   # in the object store once, whatever the number of actors
    dataset = ray.data.from_pandas(frames).map_batches(
        Replica, batch_size=None, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=plan["actors"]),
        num_gpus=plan["num_gpus"], num_cpus=plan["num_cpus"], fn_constructor_kwargs={
            "files": files, "backend": label.backend, "max_length": label.max_length,
            "batch_size": label.batch_size, "threads": plan["num_cpus"]})
    pending: dict[int, list[pd.DataFrame]] = {n: [] for n in todo}
    for batch in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        for n, rows in batch.groupby("shard"):
            pending[n].append(rows)
            if sum(len(part) for part in pending[n]) == len(todo[n]):
                rows = pd.concat(pending.pop(n)).sort_values("row")
                error = rows["error"].iloc[0]
                yield n, None if error else np.stack(rows["logits"].to_list()).astype(np.float32), error


def plan_actors(resources: dict, actors: int, shards: int, backend: str) -> dict:
    """How many actors, and what each reserves: one GPU each when the cluster has GPUs and the labeller is the
    PyTorch teacher (the ONNX backends run on the CPU), else CPU actors sharing the cluster's CPUs."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0)) if backend == "torch" else 0
    count = min(actors or gpus or max(1, cpus // THREADS_PER_CPU_ACTOR), shards)
    if gpus:
        return {"actors": count, "num_gpus": 1, "num_cpus": max(1, min(THREADS_PER_CPU_ACTOR, cpus // count))}
    return {"actors": count, "num_gpus": 0, "num_cpus": max(1, cpus // count)}


def _model_files(label) -> dict[str, bytes]:
    """The files a replica needs, by path relative to the model directory."""
    directory = Path(label.teacher_dir if label.backend == "torch" else Path(label.directory) / label.backend)
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


@contextmanager
def _cluster(ray):
    """The cluster `RAY_ADDRESS` names, or one started on this machine for the call (and stopped after it)."""
    started_here = not ray.is_initialized()
    if started_here:
        here = {} if os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **here)
    context = ray.data.DataContext.get_current()
    ours = {"enable_progress_bars": False, "print_on_execution_start": False}   # the driver's own bar counts texts
    before = {name: getattr(context, name) for name in ours}
    for name, value in ours.items():
        setattr(context, name, value)
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(context, name, value)
        logger.setLevel(level)
        if started_here:
            ray.shutdown()


def _shard_path(partial: Path, number: int) -> Path:
    return partial / f"shard-{number:05d}.parquet"


def _load_shard(path: Path, texts: list[str]):
    """A finished shard's logits, or None when it is missing, cut short by a crash, or holds other texts."""
    if not path.exists():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # a file cut short by a crash: label the shard again
        return None
    if frame["text"].tolist() != texts:
        return None
    return frame.filter(like="logit_").to_numpy(dtype=np.float32)
