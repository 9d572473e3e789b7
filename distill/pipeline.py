"""The distillation run for one profile, as cached stages under artifacts/<profile>/.

    data -> teacher -> soft_labels -> students/<student>-<mode> -> evaluation (reports/<profile>/accuracy.*)

A stage's directory holds a `stage.json` whose key is a hash of everything that stage depends on (its config and
its inputs' keys). A stage whose key matches is skipped; otherwise it is rebuilt in a temporary directory that
replaces the old one only when complete, so an interrupted run resumes where it stopped and loses nothing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from . import data as datasets
from . import students as student_zoo
from .atomic import atomic_dir, atomic_path, remove_stale_temporaries, write_json
from .config import fingerprint
from .environment import environment
from .errors import UserError
from .metrics import count_params, evaluate

MODES = ("baseline", "distilled")            # the spine, built by `make distill`
TRANSFER_MODES = ("augmented", "annealed")   # trained on train + the transfer set, built by `make ablation`
TRAINED_ON = {
    "teacher": "gold labels (fine-tuned)",
    "baseline": "gold labels",
    "distilled": "teacher logits, train",
    "augmented": "teacher logits, train + transfer set",
    "annealed": "teacher logits, train + transfer set, annealed",
}


def kind_of(model_id: str) -> str:
    """teacher | ensemble | the training mode of a student (`bilstm-augmented` -> augmented)."""
    if model_id == "teacher":
        return "teacher"
    if model_id.startswith("ensemble-"):
        return "ensemble"
    return model_id.rsplit("-", 1)[-1]


def mode_of(model_id: str) -> str:
    """How a model was trained: a key of TRAINED_ON (an ensemble's is its members')."""
    return "teacher" if model_id == "teacher" else model_id.rsplit("-", 1)[-1]


class Run:
    """Paths, cached stages and loaders of one profile's artifacts. Later stages (bench, reports, serve) use the
    loaders (`split`, `labels`, `teacher_dir`, `soft_labels`, `student`) and the one list of models, `models()`."""

    def __init__(self, profile: str, cfg: dict, artifacts="artifacts", reports="reports", progress=True, log=print,
                 rebuild_corrupt=False, base_profile: str | None = None):
        self.profile = profile               # the run's name: its directory under artifacts/ and reports/
        self.base_profile = base_profile or profile
        self.cfg = cfg
        self.dir = Path(artifacts) / profile
        self.reports = Path(reports) / profile
        self.progress = progress
        self.log = log
        self.rebuild_corrupt = rebuild_corrupt
        self._verified: set[str] = set()   # stages whose checksums were checked by this Run
        self.timings: list[dict] = []      # one row per stage() call: stage, status (built | cached), seconds

    # --- cache -------------------------------------------------------------------------------------------------
    def _stage_meta(self, name: str) -> dict | None:
        path = self.dir / name / "stage.json"
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or "key" not in meta:
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} "
                            "and run again to rebuild that stage")
        return meta

    def key(self, name: str) -> str | None:
        meta = self._stage_meta(name)
        return meta["key"] if meta else None

    def stage_info(self, name: str) -> dict:
        """What a finished stage recorded about itself (sizes, seconds, ...)."""
        self.verified_dir(name)
        return self._stage_meta(name).get("info", {})

    def stage(self, name: str, inputs: dict, build) -> tuple[Path, dict]:
        """Run `build(tmp_dir) -> info` unless `name` is cached under the same inputs. Returns (dir, info)."""
        key = fingerprint(inputs)
        meta = self._stage_meta(name)
        target = self.dir / name
        started = time.time()
        if meta and meta.get("key") == key:
            try:
                self._verify(target, meta.get("files"))
                self._verified.add(name)
                self.log(f"  {name}: cached ({target})")
                self.timings.append({"stage": name, "status": "cached", "seconds": round(time.time() - started, 2)})
                return target, meta.get("info", {})
            except CorruptArtifact as exc:
                if not self.rebuild_corrupt:
                    raise
                self.log(f"  {name}: {exc.args[0].split(';')[0]}; rebuilding it (--rebuild-corrupt)")
        with atomic_dir(target) as tmp:
            info = build(tmp) or {}
            info.setdefault("seconds", round(time.time() - started, 2))
            write_json(tmp / "stage.json", {"key": key, "inputs": inputs, "info": info, "files": _checksums(tmp),
                                            "environment": environment(), "finished": time.strftime("%FT%T")})
        if not (self.dir / "run.json").exists():   # the run's first finished stage says what the run is
            self.record()
        self._verified.add(name)
        self.log(f"  {name}: built in {time.time() - started:.1f}s")
        self.timings.append({"stage": name, "status": "built", "seconds": round(time.time() - started, 2)})
        return target, info

    @staticmethod
    def _verify(directory: Path, recorded: dict | None) -> None:
        """A cached stage is only reused if its files are the ones it wrote (a truncated or edited file is caught)."""
        if recorded is None:
            return
        found = _checksums(directory)
        changed = sorted(set(found.items()) ^ set(recorded.items()))
        if changed:
            raise CorruptArtifact(f"cached artifact {directory / changed[0][0]} is corrupt (changed or missing since "
                                  f"it was written); run again with --rebuild-corrupt to rebuild it, or delete "
                                  f"{directory} and run again")

    def verified_dir(self, name: str) -> Path:
        """The directory of stage `name`, its files checked against the checksums in its stage.json (once per Run):
        the one way every reader (stages, export, bench, serve) reaches an artifact."""
        meta = self._stage_meta(name)
        if meta is None:
            raise UserError(f"{self.dir / name} has not been built yet; run `make distill PROFILE={self.profile}`")
        directory = self.dir / name
        if name not in self._verified:
            self._verify(directory, meta.get("files"))
            self._verified.add(name)
        return directory

    # --- stages ------------------------------------------------------------------------------------------------
    def build_data(self):
        c = self.cfg["data"]

        def build(tmp):
            df = datasets.load(c["name"], c.get("text_col", "text"), c.get("label_col", "label"))
            for why, rows in df.attrs.get("dropped", {}).items():
                self.log(f"  data: note: left out {rows:,} row(s) with {why}")
            split, labels = datasets.make_split(df, c["split"], c["seed"], c.get("max_examples", 0))
            split.to_parquet(tmp / "split.parquet", index=False)
            write_json(tmp / "labels.json", labels)
            counts = split["split"].value_counts().to_dict()
            return {"examples": len(split), "labels": labels, "counts": counts}

        inputs = {"data": c, "source": _source_stamp(c["name"])}
        _, info = self.stage("data", inputs, build)
        counts = info["counts"]
        self.log(f"  data: {c['name']}, {info['examples']:,} examples, {len(info['labels'])} classes "
                 f"({counts['train']:,} train / {counts['dev']:,} dev / {counts['test']:,} test)")

    def build_teacher(self):
        from . import accelerated
        from . import teacher as T
        c = self.cfg["teacher"]
        inputs = {"teacher": c, "data": self.key("data"), "metric": self.cfg["eval"].get("metric", "accuracy")}

        def build(tmp):
            split, labels = self.split(), self.labels()
            source = T.resolve_model(c["model"], self.dir.parent / "_assets")
            dev_texts, dev_gold = datasets.texts_labels(split, "dev")
            if c.get("finetune", True):
                tokenizer, model = T.load_pretrained(source, len(labels), labels, seed=c["seed"])
                checkpoint = self.partial_dir("teacher", fingerprint(inputs)) / "checkpoint.pt"
                train = datasets.texts_labels(split, "train")
                metrics = T.fine_tune(model, tokenizer, train, (dev_texts, dev_gold), c, progress=self.progress,
                                      checkpoint=checkpoint, log=self.log, score=self.metric(),
                                      class_weights=class_weights(train[1], len(labels), c.get("class_weight")))
            else:
                tokenizer, model = T.load_pretrained(source)
                T.use_as_is(model, labels, T.parse_label_map(c.get("label_map", "")))
                started = time.time()
                logits = T.predict_logits(model.to(T.device()), tokenizer, dev_texts, c["max_length"],
                                          progress=self.progress, desc="teacher on dev")
                metrics = {"steps": 0, "best_dev_accuracy": self.metric()(dev_gold, logits.argmax(1)), "history": [],
                           "train_seconds": 0.0, "finetuned": False, "dev_seconds": round(time.time() - started, 2)}
            model.cpu().save_pretrained(tmp / "model")
            tokenizer.save_pretrained(tmp / "model")
            return {**metrics, "params": int(model.num_parameters()), "source": c["model"],
                    "dev_metric": self.metric().spec}

        _, info = self.stage("teacher", inputs, build)
        accelerated.release_helpers()   # `accelerate launch`: the other processes only help fine-tune; they leave now
        shutil.rmtree(self.dir / ".teacher.partial", ignore_errors=True)
        how = f"after {info['steps']} steps" if info.get("finetuned", True) else "used as it is (no fine-tuning)"
        self.log(f"  teacher: {c['model']}, best dev {info.get('dev_metric', 'accuracy')} "
                 f"{info['best_dev_accuracy']:.4f} {how}")

    def metric(self):
        """The run's chosen metric (`[eval] metric`), bound to its class names."""
        from .metrics import Metric
        return Metric.parse(self.cfg["eval"].get("metric", "accuracy"), self.labels())

    def partial_dir(self, name: str, key: str) -> Path:
        """artifacts/<profile>/.<name>.partial/: where a long stage keeps what survives an interrupt (checkpoints,
        labelled chunks) for the stage key `key`; emptied when the key differs, removed once the stage is done."""
        directory = self.dir / f".{name}.partial"
        meta = directory / "meta.json"
        try:
            current = json.loads(meta.read_text()).get("key") if meta.exists() else None
        except (OSError, ValueError, AttributeError):
            current = None
        if current != key:
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            write_json(meta, {"key": key})
        return directory

    def build_labeller(self):
        """Which form of the teacher labels text (distill/labelling.py): its fastest export that stays faithful."""
        from . import labelling
        labelling.build(self)

    def labeller(self):
        from . import labelling
        return labelling.load(self)

    def labeller_export(self, backend: str) -> Path | None:
        """The teacher's `backend` export made by the labeller stage, when it made one (bench reuses it)."""
        if self.key("labeller") is None:
            return None
        path = self.verified_dir("labeller") / backend
        return path if path.is_dir() else None

    def logits_source(self) -> str:
        from . import labelling
        return labelling.source_line(self.stage_info("labeller"))

    def build_soft_labels(self):
        """The teacher's logits on every example: the training text labelled by the labeller (what students learn
        from), dev and test by the teacher in PyTorch, the reference every report compares with."""
        from . import labelling

        def build(tmp):
            split = self.split()
            train = (split["split"] == "train").to_numpy()
            texts = split["text"].to_numpy()
            logits = np.zeros((len(split), len(self.labels())), dtype=np.float32)
            label = self.labeller()
            logits[train] = labelling.label_texts(self, label, list(texts[train]), "soft_labels")
            reference = label if label.backend == "torch" else labelling.Labeller(
                "torch", None, self.teacher_dir(), self.cfg["teacher"]["max_length"],
                self.cfg["labelling"]["batch_size"])
            logits[~train] = reference(list(texts[~train]), progress=self.progress)
            out = split.copy()
            for k in range(logits.shape[1]):
                out[f"logit_{k}"] = logits[:, k]
            out.to_parquet(tmp / "soft_labels.parquet", index=False)
            return {"rows": len(out), "logits_source": f"train: {self.logits_source()}; dev and test: teacher in "
                                                       "PyTorch (the reference)"}

        self.stage("soft_labels", {"labeller": self.key("labeller"), "teacher": self.key("teacher"),
                                   "version": 2}, build)   # 2: dev and test labelled by PyTorch

    def build_student(self, name: str, mode: str):
        params = {**self.cfg["students"].get(name, {}), **self.student_extras()}
        soft = self.soft_labels() if mode == "distilled" else None

        def build(tmp):
            split = self.split()
            texts, gold = datasets.texts_labels(split, "train")
            targets = gold if mode == "baseline" else logits_of(soft, "train")
            est = self.new_student(name, params)
            seconds = self.fit_student(est, texts, targets, gold if mode == "distilled" else None)
            with atomic_path(tmp / "model.joblib") as path:
                joblib.dump(est, path)
            return {"train_seconds": round(seconds, 2), "params": count_params(est)}

        inputs = {"student": name, "mode": mode, "params": params, "data": self.key("data"),
                  "soft_labels": self.key("soft_labels") if mode == "distilled" else None,
                  "code": getattr(student_zoo.REGISTRY[name], "code_version", 1)}
        if student_zoo.needs_teacher(name, params):
            inputs["teacher"] = self.key("teacher")
        self.stage(f"students/{name}-{mode}", inputs, build)

    def student_extras(self) -> dict:
        """What the run's choices add to every student's parameters: `class_weights` when `[students] class_weight`
        asks for them, and the `dev_metric` early stopping follows when `[eval] metric` is not accuracy; {} by
        default, so the stage key of a student stays what it was."""
        extra = {}
        scheme = self.cfg["students"].get("class_weight", "none")
        if scheme not in ("", "none"):
            gold = datasets.texts_labels(self.split(), "train")[1]
            extra["class_weights"] = class_weights(gold, len(self.labels()), scheme)
        if self.cfg["eval"].get("metric", "accuracy") != "accuracy":
            extra["dev_metric"] = self.metric()
        return extra

    def new_student(self, name: str, params: dict):
        """An unfitted student; one initialised from the teacher (transformer, static, ...) is pointed at it, and one
        that caches work on it between processes (the teacher's Model2Vec table) at artifacts/<profile>/.cache."""
        est = student_zoo.build(name, {**params, "progress": self.progress})
        if student_zoo.needs_teacher(name, params):
            est.set_params(teacher=str(self.teacher_dir()))
            if "memory" in est.get_params():
                est.set_params(memory=str(self.dir / ".cache"))
        return est

    def fit_student(self, est, texts, targets, hard_labels=None) -> float:
        """Fit, passing the dev split and gold labels to students whose `fit` takes them (`fit_extras`). Returns
        seconds."""
        accepts = getattr(est, "fit_extras", ())
        fit_kwargs = {}
        if "eval_set" in accepts:
            fit_kwargs["eval_set"] = datasets.texts_labels(self.split(), "dev")
        if hard_labels is not None and "hard_labels" in accepts:
            fit_kwargs["hard_labels"] = hard_labels
        started = time.time()
        est.fit(texts, targets, **fit_kwargs)
        return time.time() - started

    def build_transfer(self):
        """The augmented transfer set labelled by the teacher (distill/transfer.py)."""
        from . import transfer
        transfer.build(self)

    def evaluate(self) -> pd.DataFrame:
        """Score teacher, students and ensembles on the test split (a cached stage keyed by every model it scores);
        write reports/<profile>/accuracy.csv/.json."""
        names = [f"students/{m}" for m in self.student_names()]
        inputs = {"eval": self.cfg["eval"], "ensemble": self.cfg["students"].get("ensemble", []),
                  "models": {name: self.key(name) for name in ["data", "soft_labels", "teacher", *names]}}

        def build(tmp):
            self._score().to_csv(tmp / "accuracy.csv", index=False)
            return {}

        stage_dir, _ = self.stage("evaluation", inputs, build)
        table = pd.read_csv(stage_dir / "accuracy.csv")
        self.reports.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.reports / "accuracy.csv") as path:
            table.to_csv(path, index=False, float_format="%.4f")
        write_json(self.reports / "accuracy.json", {
            "profile": self.profile, "config": self.cfg, "environment": environment(),
            "test_examples": int((self.split()["split"] == "test").sum()),
            "rows": json.loads(table.to_json(orient="records")),
        })
        return table

    def _score(self) -> pd.DataFrame:
        c = self.cfg["eval"]
        split = self.split()
        texts, gold = datasets.texts_labels(split, "test")
        soft = self.soft_labels()
        teacher_logits = logits_of(soft, "test")
        teacher_pred = teacher_logits.argmax(1)
        teacher_info = self._stage_meta("teacher")["info"]
        metric = self.metric()
        rows = [{"model": "teacher", "kind": "teacher", **evaluate(gold, teacher_logits, teacher_pred,
                                                                     c["bootstrap"], c["seed"], metric),
                 "params": teacher_info["params"], "train_seconds": teacher_info["train_seconds"]}]
        for model_id, est in self.models(MODES).items():
            if est is None:
                continue
            members = self.ensemble_members(model_id)
            infos = [self.stage_info(f"students/{m}") for m in members or [model_id]]
            row = {"model": model_id, "kind": kind_of(model_id),
                   **evaluate(gold, est.predict_proba(texts), teacher_pred, c["bootstrap"], c["seed"], metric),
                   "params": count_params(est) if members else infos[0]["params"],
                   "train_seconds": sum(i["train_seconds"] for i in infos)}
            if members:
                row["members"] = "+".join(members)
            rows.append(row)
        return pd.DataFrame(rows)

    # --- loaders -----------------------------------------------------------------------------------------------
    def split(self) -> pd.DataFrame:
        return _read_parquet(self.verified_dir("data") / "split.parquet")

    def labels(self) -> list[str]:
        path = self.verified_dir("data") / "labels.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None

    def teacher_dir(self) -> Path:
        return self.verified_dir("teacher") / "model"

    def soft_labels(self) -> pd.DataFrame:
        return _read_parquet(self.verified_dir("soft_labels") / "soft_labels.parquet")

    def transfer_set(self) -> pd.DataFrame:
        return _read_parquet(self.verified_dir("transfer") / "transfer.parquet")

    def student_names(self) -> list[str]:
        return [f"{n}-{m}" for m in self.cfg["students"]["modes"] for n in self.cfg["students"]["names"]]

    def model_ids(self, modes=None) -> list[str]:
        """Every model of the run, in report order: the teacher, then per training mode its students and their
        ensemble. The spine's students (`students.names` x `students.modes`) must be built; students trained on the
        transfer set (`make ablation`) are included once built. `modes` keeps only those training modes."""
        required = set(self.student_names())
        names = list(dict.fromkeys([*self.cfg["students"]["names"], *self.cfg.get("ablation", {}).get("students", [])]))
        ensemble = self.cfg["students"].get("ensemble", [])
        ids = ["teacher"]
        for mode in (*MODES, *TRANSFER_MODES):
            if modes is not None and mode not in modes:
                continue
            built = [f"{n}-{mode}" for n in names
                     if f"{n}-{mode}" in required or self.key(f"students/{n}-{mode}") is not None]
            ids += built
            if sum(f"{n}-{mode}" in built for n in ensemble) >= 2:
                ids.append(f"ensemble-{mode}")
        return ids

    def ensemble_members(self, model_id: str) -> list[str]:
        """The students an ensemble averages ([] for any other model)."""
        if kind_of(model_id) != "ensemble":
            return []
        mode = mode_of(model_id)
        return [f"{n}-{mode}" for n in self.cfg["students"].get("ensemble", [])
                if self._stage_meta(f"students/{n}-{mode}") is not None]

    def models(self, modes=None) -> dict:
        """model id -> fitted estimator (None for the teacher, whose weights live in `teacher_dir()`), ensembles
        included: the one list of models that evaluation, export, bench, report and serve share."""
        out = {}
        for model_id in self.model_ids(modes):
            out[model_id] = self.model(model_id, out)
        return out

    def model(self, model_id: str, loaded: dict | None = None):
        """One model of `model_ids()`, loaded (members of an ensemble are taken from `loaded` when there)."""
        loaded = loaded if loaded is not None else {}
        if model_id == "teacher":
            return None
        members = self.ensemble_members(model_id)
        if members:
            return student_zoo.AveragingEnsemble.from_fitted(
                [(m, loaded[m] if m in loaded else self.student(m)) for m in members])
        return self.student(model_id)

    def student(self, model_id: str):
        path = self.verified_dir(f"students/{model_id}") / "model.joblib"
        try:
            return joblib.load(path)
        except Exception:  # a truncated or foreign pickle raises any of a dozen types
            raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None

    # --- everything --------------------------------------------------------------------------------------------
    def all(self) -> pd.DataFrame:
        names, modes = self.cfg["students"]["names"], self.cfg["students"]["modes"]
        if not names or not modes:
            raise UserError("no students to train (students.names or students.modes is empty); name at least one, "
                            f"e.g. --students {','.join(student_zoo.REGISTRY)}")
        unknown = [n for n in names if n not in student_zoo.REGISTRY]
        if unknown:
            raise UserError(f"unknown student(s) {', '.join(unknown)}; choose from {', '.join(student_zoo.REGISTRY)}")
        for path in remove_stale_temporaries(self.dir) if self.dir.exists() else []:
            self.log(f"  removed {path}, left by an interrupted run")
        steps = [("data", self.build_data), ("teacher", self.build_teacher), ("labeller", self.build_labeller),
                 ("soft labels", self.build_soft_labels)]
        steps += [(f"student {n} ({m})", lambda n=n, m=m: self.build_student(n, m)) for m in modes for n in names]
        for i, (title, fn) in enumerate(steps, 1):
            self.log(f"[{i}/{len(steps) + 1}] {title}")
            fn()
        self.log(f"[{len(steps) + 1}/{len(steps) + 1}] evaluation on the test split")
        table = self.evaluate()
        self.record()
        return table

    def record(self) -> None:
        """artifacts/<run>/run.json: which profile, data and configuration this run is; bench, serve and later
        commands reopen the run with it, and `distill/runs.py` keeps other runs out of its directory."""
        write_json(self.dir / "run.json", {"profile": self.profile, "base_profile": self.base_profile,
                                           "config": self.cfg})


class CorruptArtifact(UserError):
    """A cached file differs from the checksum its stage recorded."""


def _checksums(directory: Path) -> dict:
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        if path.is_file() and path.name != "stage.json":
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[str(path.relative_to(directory))] = digest.hexdigest()[:16]
    return out


def class_weights(gold, num_classes: int, scheme: str | None) -> list[float] | None:
    """Per-class loss weights: None for "none", n / (k * count) for "balanced" (scikit-learn's formula)."""
    if scheme in (None, "", "none"):
        return None
    if scheme != "balanced":
        raise UserError(f"class_weight must be \"none\" or \"balanced\", not {scheme!r}")
    counts = np.bincount(np.asarray(gold, dtype=int), minlength=num_classes).astype(float)
    return [float(w) for w in len(gold) / (num_classes * np.maximum(counts, 1))]


def logits_of(soft: pd.DataFrame, part: str) -> np.ndarray:
    rows = soft[soft["split"] == part]
    return rows[[c for c in soft.columns if c.startswith("logit_")]].to_numpy(dtype=np.float32)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception:  # pyarrow raises several types for a truncated or foreign file
        raise UserError(f"cached artifact {path} is unreadable; delete {path.parent} and run again") from None


def _source_stamp(name: str):
    """A CSV's size and mtime join the data key, so editing the file invalidates the cache."""
    path = Path(name)
    if name.lower().endswith(".csv") and path.exists():
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return name
