"""Caching and resume through the CLI: a second run rebuilds nothing, a changed parameter rebuilds exactly what
depends on it, an interrupted stage keeps the previous artifact, a corrupt artifact is a one-line error."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import joblib
import pytest

from distill.atomic import atomic_dir, atomic_path, write_json
from distill.cli import main
from distill.errors import UserError
from distill.pipeline import Run
from distill.students import TfidfNaiveBayes
from tests.conftest import cli_argv, tiny_config

STAGES = ["data", "teacher", "soft_labels", "students/tfidf_lr-baseline", "students/nb-baseline",
          "students/tfidf_lr-distilled", "students/nb-distilled"]


def snapshot(artifacts: Path, run_json: bool = True) -> dict:
    """mtime and size of every stage file under the profile's artifact dir, and the content of run.json (the run's
    config for bench/serve, rewritten by every run) unless `run_json` is False (tests/test_cli.py checks it)."""
    return {str(p.relative_to(artifacts)): p.read_text() if p.name == "run.json" else
            (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(artifacts.rglob("*"))
            if p.is_file() and (run_json or p.name != "run.json")}


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".old")) or ".tmp" in p.name]


def test_first_run_built_every_stage(finished_cli_run):
    profile = finished_cli_run / "artifacts" / "smoke"
    for stage in STAGES:
        meta = json.loads((profile / stage / "stage.json").read_text())
        assert set(meta) >= {"key", "inputs", "info", "environment", "finished"}
    assert (finished_cli_run / "reports" / "smoke" / "accuracy.csv").exists()
    assert leftovers(finished_cli_run) == []


def test_second_run_rebuilds_nothing(root, tiny_teacher_dir, capsys):
    profile = root / "artifacts" / "smoke"
    before = snapshot(profile)
    assert main(cli_argv(root, tiny_teacher_dir)) == 0
    out = capsys.readouterr().out
    assert snapshot(profile) == before
    for stage in STAGES:
        assert f"  {stage}: cached" in out, stage
    assert "built in" not in out


def test_changed_student_param_rebuilds_only_that_student(root, tiny_teacher_dir, capsys):
    profile = root / "artifacts" / "smoke"
    before = snapshot(profile)
    assert main(cli_argv(root, tiny_teacher_dir, "--set", "students.nb.alpha=0.5")) == 0
    out = capsys.readouterr().out
    after = snapshot(profile)
    rebuilt = {"students/nb-baseline", "students/nb-distilled"}
    for stage in STAGES:
        same = before[f"{stage}/stage.json"] == after[f"{stage}/stage.json"]
        assert same == (stage not in rebuilt), stage
        assert (f"  {stage}: cached" in out) == (stage not in rebuilt), stage
    assert joblib.load(profile / "students/nb-baseline/model.joblib").alpha == 0.5
    assert joblib.load(profile / "students/nb-distilled/model.joblib").alpha == 0.5
    # and back: the old parameter value is a cache miss again, not a stale hit
    assert main(cli_argv(root, tiny_teacher_dir)) == 0
    assert joblib.load(profile / "students/nb-baseline/model.joblib").alpha == 0.3


def test_changed_teacher_param_rebuilds_teacher_and_everything_downstream(root, tiny_teacher_dir, capsys):
    profile = root / "artifacts" / "smoke"
    before = snapshot(profile)
    assert main(cli_argv(root, tiny_teacher_dir, "--set", "teacher.lr=5e-4")) == 0
    out = capsys.readouterr().out
    after = snapshot(profile)
    rebuilt = {"teacher", "soft_labels", "students/tfidf_lr-distilled", "students/nb-distilled"}
    for stage in STAGES:
        assert (before[f"{stage}/stage.json"] == after[f"{stage}/stage.json"]) == (stage not in rebuilt), stage
        assert (f"  {stage}: cached" in out) == (stage not in rebuilt), stage


def test_edited_csv_invalidates_the_data_stage(tmp_path, tiny_teacher_dir, capsys):
    csv = tmp_path / "reviews.csv"
    rows = [f"review number {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(60)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    args = cli_argv(tmp_path, tiny_teacher_dir, "--data", str(csv), "--students", "tfidf_lr")
    assert main(args) == 0
    capsys.readouterr()
    csv.write_text("text,label\n" + "\n".join(rows + ["one more good one,pos"]) + "\n")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data: built" in out and "61 examples" in out


def test_interrupted_stage_keeps_previous_artifact(root, tiny_teacher_dir, monkeypatch, capsys):
    profile = root / "artifacts" / "smoke"
    before = snapshot(profile, run_json=False)

    def interrupted(self, X, y):          # Ctrl-C in the middle of the first nb student's training
        raise KeyboardInterrupt

    monkeypatch.setattr(TfidfNaiveBayes, "fit", interrupted)
    assert main(cli_argv(root, tiny_teacher_dir, "--set", "students.nb.alpha=0.5")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert snapshot(profile, run_json=False) == before       # no stage changed, nothing half-written
    assert leftovers(root) == []
    assert joblib.load(profile / "students/nb-baseline/model.joblib").alpha == 0.3
    monkeypatch.undo()
    # resume: only the interrupted student is rebuilt
    assert main(cli_argv(root, tiny_teacher_dir, "--set", "students.nb.alpha=0.5")) == 0
    out = capsys.readouterr().out
    assert "students/tfidf_lr-baseline: cached" in out and "students/nb-baseline: built" in out


def test_an_interrupted_student_resumes_from_its_checkpoint(root, tiny_teacher_dir, monkeypatch, capsys):
    """Ctrl-C after a torch student's first checkpoint (in its stage's partial directory); the next run resumes that
    fit at the step it was saved, records it in stage.json and removes the partial directory."""
    from distill import training_loop as loop
    from distill.students import BiLSTMClassifier
    argv = cli_argv(root, tiny_teacher_dir, "--set", "students.bilstm.embedding=random", "--set",
                    "students.bilstm.hidden=8", "--set", "students.bilstm.epochs=1", students="bilstm")
    honest_save = loop.save_checkpoint

    def save_then_interrupt(path, state):
        honest_save(path, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    monkeypatch.setattr(BiLSTMClassifier, "checkpoint_seconds", 0.0)
    assert main(argv) == 130
    students = root / "artifacts" / "smoke" / "students"
    assert (students / ".bilstm-baseline.partial" / "checkpoint.pt").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main(argv) == 0
    assert "students/bilstm-baseline: resumed from its checkpoint at step 1" in capsys.readouterr().out
    assert json.loads((students / "bilstm-baseline" / "stage.json").read_text())["info"]["resumed_from_step"] == 1
    assert not (students / ".bilstm-baseline.partial").exists()


def test_failing_build_leaves_old_stage_and_no_temp_dir(tmp_path):
    run = Run("p", {}, tmp_path / "artifacts", tmp_path / "reports", progress=False, log=lambda *_: None)

    def good(tmp):
        (tmp / "payload.txt").write_text("v1")
        return {"version": 1}

    run.stage("thing", {"v": 1}, good)
    target = tmp_path / "artifacts" / "p" / "thing"
    meta = (target / "stage.json").read_text()

    def bad(tmp):
        (tmp / "payload.txt").write_text("half of v2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run.stage("thing", {"v": 2}, bad)
    assert (target / "payload.txt").read_text() == "v1"
    assert (target / "stage.json").read_text() == meta
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json", "thing"]   # run.json: Run.record
    # the unchanged inputs are still a cache hit, the new ones still a miss
    assert run.stage("thing", {"v": 1}, bad)[1] == {"version": 1, "seconds": json.loads(meta)["info"]["seconds"]}
    assert run.key("thing") == json.loads(meta)["key"]


# --- corrupt artifacts -----------------------------------------------------------------------------------------
def truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def garbage(path: Path):
    path.write_bytes(b"\x00\x01 this is not what it should be \xff" * 3)


def json_list(path: Path):
    path.write_text('["a", "json", "list"]')


def json_string(path: Path):
    path.write_text('"just a string"')


CORRUPTIONS = [
    ("data/split.parquet", truncate),
    ("data/split.parquet", garbage),
    ("soft_labels/soft_labels.parquet", truncate),
    ("students/tfidf_lr-baseline/model.joblib", truncate),
    ("students/nb-distilled/model.joblib", garbage),
    ("teacher/stage.json", garbage),
    ("students/nb-baseline/stage.json", truncate),
    ("data/stage.json", json_list),
    ("soft_labels/stage.json", json_string),
]


@pytest.mark.parametrize("relative, corrupt", CORRUPTIONS,
                         ids=[f"{r}-{c.__name__}" for r, c in CORRUPTIONS])
def test_corrupt_artifact_is_a_one_line_error(root, tiny_teacher_dir, capfd, relative, corrupt):
    profile = root / "artifacts" / "smoke"
    path = profile / relative
    corrupt(path)
    before = snapshot(profile)
    capfd.readouterr()
    assert main(cli_argv(root, tiny_teacher_dir)) == 2
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert str(path.parent) in lines[0] and "delete" in lines[0]
    assert snapshot(profile) == before                       # the failing run changed nothing


def test_corrupt_artifact_in_a_real_process(root, tiny_teacher_dir):
    """As the user sees it: nothing but the one line on stderr (pytest hides warnings and log records in-process)."""
    import subprocess
    import sys
    truncate(root / "artifacts" / "smoke" / "students" / "tfidf_lr-baseline" / "model.joblib")
    proc = subprocess.run([sys.executable, "-m", "distill", *cli_argv(root, tiny_teacher_dir)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: cached artifact {root}/artifacts/smoke/students/tfidf_lr-baseline/model.joblib is corrupt (changed "
        f"or missing since it was written); run again with --rebuild-corrupt to rebuild it, or delete "
        f"{root}/artifacts/smoke/students/tfidf_lr-baseline and run again"]


def test_rebuild_corrupt_rebuilds_only_the_corrupt_stage(root, tiny_teacher_dir, capfd):
    students = root / "artifacts" / "smoke" / "students"
    truncate(students / "tfidf_lr-baseline" / "model.joblib")
    untouched = (students / "nb-baseline" / "stage.json").read_bytes()
    capfd.readouterr()
    assert main(cli_argv(root, tiny_teacher_dir, "--rebuild-corrupt")) == 0
    out = capfd.readouterr().out
    assert "students/tfidf_lr-baseline: cached artifact" in out and "rebuilding it (--rebuild-corrupt)" in out
    assert (students / "nb-baseline" / "stage.json").read_bytes() == untouched
    assert main(cli_argv(root, tiny_teacher_dir)) == 0          # and the rebuilt stage verifies


def test_every_reader_verifies_an_edited_artifact(root):
    """Not only the CLI: a Run opened by bench or serve refuses an artifact edited after it was written."""
    from bench.zoo import open_run
    from serve.models import load_run
    weights = next((root / "artifacts" / "smoke" / "teacher" / "model").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    run = open_run("smoke", root / "artifacts", root / "reports")
    with pytest.raises(UserError, match=r"teacher/model/model.safetensors is corrupt.*--rebuild-corrupt"):
        run.teacher_dir()
    loaded = load_run(open_run("smoke", root / "artifacts", root / "reports"), log=lambda *_: None)
    assert "teacher/torch" not in {p.name for p in loaded.predictors} and loaded.predictors
    assert any("corrupt" in m.reason for m in loaded.missing)


def test_corrupt_labels_json_through_the_loader(root):
    run = Run("smoke", tiny_config(Path("unused")), root / "artifacts", root / "reports")
    assert run.labels() == ["fresh", "rotten"]
    garbage(root / "artifacts" / "smoke" / "data" / "labels.json")
    with pytest.raises(UserError, match="labels.json is unreadable"):
        run.labels()


def test_missing_stage_is_a_clear_error(tmp_path):
    run = Run("nothing", {}, tmp_path / "artifacts", tmp_path / "reports")
    with pytest.raises(UserError, match=r"has not been built yet; run `make distill PROFILE=nothing`"):
        run.split()


# --- atomic writes ---------------------------------------------------------------------------------------------
def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("one")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_text() == "one"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("two, half")
            raise ValueError
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "stage"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise KeyboardInterrupt
    assert (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b"]   # replaced as a whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json(path, {"a": Unserialisable()})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_temporaries_of_dead_runs_are_removed_and_live_ones_kept(root, tiny_teacher_dir, capfd):
    import subprocess
    import sys
    students = root / "artifacts" / "smoke" / "students"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = students / f".nb-baseline.{dead.stdout.strip()}.x1y2z3.tmp"
    stale.mkdir()
    (stale / "model.joblib").write_bytes(b"half written")
    live = students / f".nb-distilled.{os.getpid()}.a1b2c3.tmp"
    live.mkdir()
    capfd.readouterr()
    assert main(cli_argv(root, tiny_teacher_dir)) == 0
    assert not stale.exists() and live.exists()
    assert f"removed {stale}, left by an interrupted run" in capfd.readouterr().out


# --- the store's partial directories, the stage graph, the model-id grammar ------------------------------------
def test_partial_dir_is_kept_for_its_key_and_removed_when_the_stage_is_done(tmp_path):
    run = Run("p", {}, tmp_path / "artifacts", tmp_path / "reports", progress=False, log=lambda *_: None)
    partial = run.partial_dir("thing", "k1")
    (partial / "checkpoint.pt").write_text("step 3")
    assert partial == tmp_path / "artifacts" / "p" / ".thing.partial"
    assert (run.partial_dir("thing", "k1") / "checkpoint.pt").exists()      # the same work: resumed
    assert not (run.partial_dir("thing", "k2") / "checkpoint.pt").exists()  # another key: emptied
    assert run.store.partial_path("students/nb-baseline") == tmp_path / "artifacts/p/students/.nb-baseline.partial"
    run.stage("thing", {"v": 1}, lambda tmp: {})
    assert not partial.exists()


def test_the_spine_and_the_ablation_share_one_graph():
    from distill import stages
    cfg = {"students": {"names": ["tfidf_lr", "nb"], "modes": ["baseline", "distilled"]}}
    spine = stages.spine(SimpleNamespace(cfg=cfg))
    assert [s.name for s in spine] == ["data", "teacher", "labeller", "soft_labels", "students/tfidf_lr-baseline",
                                       "students/nb-baseline", "students/tfidf_lr-distilled",
                                       "students/nb-distilled", "evaluation"]
    ablation = stages.plan({"tfidf_lr": ["baseline", "distilled", "augmented", "annealed"],
                            "nb": ["baseline", "distilled", "augmented"]})
    assert [s.name for s in ablation][4:] == ["students/tfidf_lr-baseline", "students/nb-baseline",
                                              "students/tfidf_lr-distilled", "students/nb-distilled", "transfer",
                                              "students/tfidf_lr-augmented", "students/nb-augmented",
                                              "students/tfidf_lr-annealed"]
    builders = {s.build.func for s in ablation if s.name.startswith("students/")}
    assert len(builders) == 1                                   # every mode: the one student stage
    with pytest.raises(UserError, match="students.modes takes baseline and distilled, not augmented"):
        stages.spine(SimpleNamespace(cfg={"students": {"names": ["nb"], "modes": ["augmented"]}}))


@pytest.mark.parametrize("model_id, student, mode, kind", [
    ("teacher", None, "teacher", "teacher"), ("bilstm-distilled", "bilstm", "distilled", "distilled"),
    ("tfidf_lr-augmented", "tfidf_lr", "augmented", "augmented"), ("ensemble-annealed", None, "annealed", "ensemble")])
def test_model_id_grammar(model_id, student, mode, kind):
    from distill.catalogue import parse_model_id
    parsed = parse_model_id(model_id)
    assert (parsed.student, parsed.mode, parsed.kind) == (student, mode, kind)
