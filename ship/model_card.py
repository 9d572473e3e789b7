"""MODEL_CARD.md: Hugging Face's model-card layout (YAML metadata with a model-index, then the usual sections),
filled from the run: its data and teacher, the training recipe, the test scores with their 95% intervals, the
benchmark's latencies beside the teacher's on the same CPU, the export's validation, the files and their sizes."""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bench.results import join
from distill.catalogue import TRAINED_ON, TRANSFER_MODES, parse_model_id
from distill.families import FAMILIES
from distill.families.manifest import Manifest, read_manifest
from distill.pipeline import Run
from distill.transfer import labelled_by

from .parts import needed_libraries
from .runtime.predict import MANIFEST

CARD = "MODEL_CARD.md"

TEMPLATE = """---
{{ card_data }}
---

# {{ model }} ({{ backend }})

A text classifier for {{ labels | join(", ") }}, distilled from a fine-tuned BERT teacher by my-bert-is-too-big
(run `{{ run }}`). This folder runs on its own: `predict.py` needs only {{ libraries | join(", ") }}.

## Model Details

### Model Description

- **Model type:** {{ family }} ({{ kind }}), as {{ backend }}; {{ params }} learned parameters
- **Teacher:** {{ teacher.name }} ({{ teacher.params }} parameters), {{ teacher.how }}; test {{ metric }} \
{{ teacher.score }}
- **Labels:** {{ labels | join(", ") }}
- **Made by:** {{ made_by }}

## Uses

Classify short texts like those of `{{ data }}` into {{ labels | join(", ") }}, on a CPU, one at a time or in batches.
Out of scope: text of other domains or languages, labels the data does not have, decisions about people.

## Bias, Risks, and Limitations

{% for line in limitations -%}
- {{ line }}
{% endfor %}
## How to Get Started with the Model

```bash
pip install -r requirements.txt
python predict.py "a gripping, funny film"          # one JSON line per text; or texts on stdin, one a line
python predict.py --csv texts.csv --text-col text > scored.csv
```

```python
from predict import Classifier                      # with this folder on sys.path
model = Classifier.load(".")                        # checks every file against manifest.json first
model.predict_proba(["a gripping, funny film"])     # columns in model.labels order
```
{% if hf %}
`hf/` is also a Hugging Face model directory (PyTorch weights in safetensors, the ONNX graph, the tokenizer):

```python
from transformers import pipeline                   # pip install transformers torch
classify = pipeline("text-classification", model="hf")
classify(["a gripping, funny film"], truncation=True, max_length={{ max_length }})

from optimum.onnxruntime import ORTModelForSequenceClassification   # pip install optimum[onnxruntime]
model = ORTModelForSequenceClassification.from_pretrained("hf", file_name="{{ hf_onnx }}")
```
{% endif %}
## Training Details

### Training Data

`{{ data }}`: {{ splits.train }} training, {{ splits.dev }} development and {{ splits.test }} test texts.

### Training Procedure

{% for line in recipe -%}
- {{ line }}
{% endfor %}
## Evaluation

### Testing Data, Factors & Metrics

The {{ splits.test }} test texts of the run; the run's metric is **{{ metric }}**, with a percentile-bootstrap 95%
interval over test texts. Agreement: how often the model gives the teacher's label.

### Results

{% set other = metric != "accuracy" -%}
| | accuracy (95% CI) |{% if other %} {{ metric }} (95% CI) |{% endif %} macro-F1 | agreement with the teacher |
|---|---|{% if other %}---|{% endif %}---|---|
| this model | {{ scores.accuracy }} |{% if other %} {{ scores.score }} |{% endif %} {{ scores.macro_f1 }} | \
{{ scores.agreement }} |
| teacher (PyTorch) | {{ teacher.accuracy }} |{% if other %} {{ teacher.score }} |{% endif %} {{ teacher.macro_f1 }} | 100% |

**Export validation:** {{ validation }}

### Speeds, Sizes, Times

{% if latency -%}
End to end (text in, probabilities out), median of the run's benchmark on {{ machine }}:

| batch | this model (ms) | p90 (ms) | teacher, PyTorch eager (ms) | speedup |
|---|---|---|---|---|
{% for row in latency -%}
| {{ row.batch_size }} | {{ row.median }} | {{ row.p90 }} | {{ row.teacher }} | {{ row.speedup }} |
{% endfor %}
{%- else -%}
{{ no_latency }}
{%- endif %}

Size: {{ size }} in all:

| file | bytes |
|---|---|
{% for name, size in files -%}
| `{{ name }}` | {{ size }} |
{% endfor %}
"""


def percent(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"


def with_ci(entry: dict, value: str, low: str, high: str) -> str:
    return f"{percent(entry.get(value))} ({percent(entry.get(low))}-{percent(entry.get(high))})"


def megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def scores(entry: dict) -> dict:
    accuracy = with_ci(entry, "accuracy", "ci_low", "ci_high")
    return {"score": with_ci(entry, "score", "score_low", "score_high") if "score" in entry else accuracy,
            "accuracy": accuracy,
            "macro_f1": percent(entry.get("macro_f1")), "agreement": percent(entry.get("agreement"))}


def teacher_facts(run: Run, manifest_teacher: dict) -> dict:
    cfg = run.cfg["teacher"]
    how = (f"fine-tuned on the training split ({cfg['epochs']} epoch(s), lr {cfg['lr']}, batch {cfg['batch_size']}, "
           f"at most {cfg['max_length']} tokens)" if cfg.get("finetune", True) else "used as it was given")
    return {"name": cfg["model"], "params": f"{manifest_teacher.get('params', 0):,}", "how": how,
            **scores(manifest_teacher)}


def student_settings(run: Run, model: str) -> dict:
    name, mode = model.rsplit("-", 1)
    settings = dict(run.cfg["students"].get(name, {}))
    if mode in TRANSFER_MODES:
        settings.update(run.cfg.get("ablation", {}).get(name, {}))
    return settings


def recipe(run: Run, model: str) -> list[str]:
    """How `model` was trained, one line per fact."""
    if model == "teacher":
        return [f"the teacher itself: {teacher_facts(run, {})['how']}"]
    members = run.ensemble_members(model)
    if members:
        return [f"the mean of the probabilities of {', '.join(members)}"] + [
            f"{member}: {line}" for member in members for line in recipe(run, member)]
    mode = parse_model_id(model).mode
    settings = ", ".join(f"{k}={v}" for k, v in student_settings(run, model).items())
    lines = [f"targets: {TRAINED_ON.get(mode, mode)}", f"settings: {settings or 'the defaults'}"]
    if mode in TRANSFER_MODES:
        t = run.cfg["transfer"]
        lines.append(f"transfer set: each training text augmented {t['n_iter']}x (mask p={t['p_mask']}, GloVe "
                     f"substitution p={t['p_sub']}, n-gram sampling p={t['p_ng']}), labelled by "
                     f"{labelled_by(run.stage_info('transfer'))}")
    if mode == "annealed":
        lines.append("teacher annealing: the target slides from the teacher's logits to the gold label")
    return lines


def latency(manifest: Manifest, bench: dict, entry: dict) -> list[dict]:
    table = join(manifest, bench)
    mine = table[(table["model"] == entry["model"]) & (table["backend"] == entry["backend"])]
    teacher = table[(table["model"] == "teacher") & (table["backend"] == "torch")].set_index("batch_size")
    rows = []
    for row in mine.sort_values("batch_size").itertuples():
        reference = teacher["median_ms"].get(row.batch_size)
        rows.append({"batch_size": row.batch_size, "median": f"{row.median_ms:.3f}", "p90": f"{row.p90_ms:.3f}",
                     "teacher": "n/a" if reference is None else f"{reference:.2f}",
                     "speedup": "n/a" if reference is None else f"{reference / row.median_ms:.1f}x"})
    return rows


def machine(bench: dict) -> str:
    m = bench.get("machine_info", {})
    threads = m.get("threads") or {}
    return (f"{m.get('cpu_model')} ({m.get('cpu_count')} cores; flags {' '.join(m.get('cpu_flags') or []) or 'n/a'}; "
            f"ONNX Runtime threads: {threads.get('onnxruntime_intra_op_students')} for students, "
            f"{threads.get('onnxruntime_intra_op')} for transformers), benchmarked {bench.get('datetime', '')}")


def validation(entry: dict, check) -> str:
    if entry.get("max_abs_diff") is None:
        exported = "the model as it was trained (no export to validate)"
    else:
        exported = (f"max |p - p_source| = {entry['max_abs_diff']:.3g} (tolerance {entry.get('tolerance')}), the "
                    f"source's label on {percent(entry.get('label_agreement_with_source'))} of the first test texts")
    note = f" {entry['drift_note']}." if entry.get("drift_note") else ""
    return (f"{exported}.{note} This package's predict.py against the validated export: max |p - p_export| = "
            f"{check.max_abs_diff:.3g} on {check.sentences} test texts.")


def limitations(run: Run, entry: dict, info: dict, splits: dict) -> list[str]:
    spec = info["runtime"]
    lines = [f"Trained and tested on `{run.cfg['data']['name']}` only: expect lower accuracy on other domains, "
             "languages or text lengths.",
             f"Every text gets one of {', '.join(run.labels())}, however unlike them it is.",
             f"The 95% intervals come from {splits['test']} test texts: smaller differences are not significant.",
             "A distilled student's probabilities follow its teacher's confidence; they are not calibrated."]
    lengths = sorted({m["max_length"] for m in [spec, *spec.get("members", [])] if "max_length" in m})
    if lengths:
        lines.append(f"Reads at most {'/'.join(map(str, lengths))} tokens of a text; the rest is ignored.")
    if entry.get("drift_note"):
        lines.append("int8 weights: " + entry["drift_note"] + ".")
    if entry["family"] == "sklearn" and entry["backend"] == "onnx":
        lines.append("ONNX Runtime's tokenizer reads only ASCII word characters: accented words score differently "
                     "from the scikit-learn model.")
    lines.append(f"{MANIFEST} catches a changed or broken file, not a deliberate rebuild: it is not signed.")
    return lines


def package_files(directory: Path) -> list[tuple[str, int]]:
    return [(p.relative_to(directory).as_posix(), p.stat().st_size) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in (CARD, MANIFEST)]


def card_data(run: Run, entry: dict, libraries: list[str]) -> ModelCardData:
    data, metric = run.cfg["data"]["name"], entry.get("metric", "accuracy")
    metrics = [("accuracy", entry["accuracy"])] + ([(metric, entry["score"])] if metric != "accuracy" else [])
    return ModelCardData(
        model_name=f"{entry['model']} ({entry['backend']})", pipeline_tag="text-classification",
        library_name="onnxruntime" if "onnxruntime" in libraries else "numpy",
        tags=["text-classification", "knowledge-distillation", entry["family"], entry["backend"]],
        metrics=[name for name, _ in metrics],
        eval_results=[EvalResult(task_type="text-classification", dataset_type=data, dataset_name=data,
                                 dataset_split="test", metric_type=name, metric_value=round(value, 4))
                      for name, value in metrics])


def model_card(run: Run, entry: dict, info: dict, bench: dict | None, directory: Path, check) -> str:
    manifest = read_manifest(run.dir)
    teacher = next((v.row() for v in manifest.variants if (v.model, v.backend) == ("teacher", "torch")), {})
    split = run.split()
    splits = {part: int((split["split"] == part).sum()) for part in ("train", "dev", "test")}
    files = package_files(directory)
    libraries = needed_libraries(info["runtime"])
    spec = info["runtime"]
    card = ModelCard.from_template(
        card_data(run, entry, libraries), template_str=TEMPLATE, model=entry["model"], backend=entry["backend"],
        run=run.profile, labels=run.labels(), libraries=libraries, family=FAMILIES[entry["family"]].title,
        kind=entry["kind"], params=f"{entry.get('params', 0):,}", teacher=teacher_facts(run, teacher),
        metric=entry.get("metric", "accuracy"), made_by=info["made_by"], data=run.cfg["data"]["name"],
        splits=splits, recipe=recipe(run, entry["model"]), scores=scores(entry), validation=validation(entry, check),
        latency=latency(manifest, bench, entry) if bench else [], machine=machine(bench) if bench else "",
        no_latency="Not timed in the run's benchmark yet: `mbtb bench` times it, `mbtb package` again writes it here.",
        size=megabytes(sum(size for _, size in files)), files=files, limitations=limitations(run, entry, info, splits),
        hf=spec["kind"] == "transformer-onnx", max_length=spec.get("max_length"),
        hf_onnx=Path(spec.get("model", "")).name)
    return str(card)

