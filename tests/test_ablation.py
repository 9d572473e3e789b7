"""The ablation end to end on the tiny run: every stage it needs, then reports/<profile>/ablation.csv and .md."""
import copy
import json

import numpy as np
import pandas as pd
import pytest

from distill import ablation
from distill import data as datasets
from distill.metrics import ACCURACY
from distill.pipeline import Run

FAST = {"transformer": {"max_steps": 4, "max_length": 24, "batch_size": 16},
        "bilstm": {"epochs": 1}}


@pytest.fixture(scope="module")
def ablation_run(tiny_run):
    """The tiny run's artifacts (data, teacher, soft labels, students are reused from its cache), fast settings."""
    cfg = copy.deepcopy(tiny_run.cfg)
    cfg["ablation"]["anneal"] = ["tfidf_lr", "bilstm", "transformer"]
    cfg["ablation"].update(FAST)
    cfg["students"]["transformer"].update(FAST["transformer"])
    return Run("tiny", cfg, tiny_run.dir.parent, tiny_run.reports.parent, progress=False, log=lambda *_: None)


def test_ablation_writes_csv_and_markdown(ablation_run):
    table = ablation.run_ablation(ablation_run, "python -m distill.ablation --profile tiny")
    written = pd.read_csv(ablation_run.reports / "ablation.csv")
    assert list(written.columns) == ablation.COLUMNS and len(written) == len(table)
    variants = written.groupby("student")["variant"].apply(list).to_dict()
    assert variants["tfidf_lr"] == list(ablation.VARIANTS)
    assert variants["nb"] == ["hard", "soft", "soft+aug"]  # not in ablation.anneal
    assert set(variants) == {"tfidf_lr", "tfidf_ridge", "nb", "bilstm", "static", "transformer"}
    assert ((written["ci_low"] <= written["accuracy"]) & (written["accuracy"] <= written["ci_high"])).all()
    assert set(written["metric"]) == {"accuracy"} and (written["score"] == written["accuracy"]).all()
    assert (written.loc[written["variant"] == "hard", "gain_vs_hard"] == 0).all()
    assert ((written["gain_ci_low"] <= written["gain_vs_hard"] + 1e-9)
            & (written["gain_vs_hard"] <= written["gain_ci_high"] + 1e-9)).all()
    transfer_rows = ablation_run.stage_info("transfer")["rows"]
    train = int((ablation_run.split()["split"] == "train").sum())
    augmented = written[written["variant"].str.contains("aug")]
    assert (augmented["train_texts"] == train + transfer_rows).all()
    assert (written.loc[~written["variant"].str.contains("aug"), "train_texts"] == train).all()
    md = (ablation_run.reports / "ablation.md").read_text()
    assert "| tfidf_lr |" in md and "python -m distill.ablation --profile tiny" in md and "Transfer set:" in md


def test_the_ablation_scores_and_gains_follow_the_runs_metric(ablation_run):
    """`--metric macro_f1` (eval.metric): the score columns, the gains over the hard twin and their paired CIs are
    macro-F1, accuracy stays beside them; the same cached students, scored by a run that names another metric."""
    ablation.run_ablation(ablation_run)   # the students (cached when the test above has run)
    cfg = copy.deepcopy(ablation_run.cfg)
    cfg["eval"]["metric"] = "macro_f1"
    run = Run("tiny", cfg, ablation_run.dir.parent, ablation_run.reports.parent, progress=False, log=lambda *_: None)
    table = ablation.ablation_table(run)
    assert list(table.columns) == ablation.COLUMNS and set(table["metric"]) == {"macro_f1"}
    np.testing.assert_allclose(table["score"], table["macro_f1"], atol=1e-9)      # sklearn's macro-F1 agrees
    assert not np.allclose(table["score"], table["accuracy"])
    hard = table[table["variant"] == "hard"].set_index("student")["score"]
    np.testing.assert_allclose(table["gain_vs_hard"], table["score"] - table["student"].map(hard), atol=1e-9)
    assert ((table["gain_ci_low"] <= table["gain_vs_hard"] + 1e-9)
            & (table["gain_vs_hard"] <= table["gain_ci_high"] + 1e-9)).all()
    md = ablation.markdown(run, table, "mbtb ablation --metric macro_f1")
    assert "Test macro_f1 [bootstrap 95% CI]" in md and "macro_f1 gain with a paired bootstrap" in md
    teacher_line = next(line for line in md.splitlines() if line.startswith("Data "))
    assert " macro_f1 0." in teacher_line


def test_annealing_is_real_for_neural_students_and_a_fixed_mix_for_linear_ones(ablation_run):
    assert ablation_run.student("bilstm-annealed").anneal is True
    assert ablation_run.student("transformer-annealed").anneal is True
    assert ablation_run.student("bilstm-augmented").anneal is False
    assert "mix" in ablation_run.stage_info("students/tfidf_lr-annealed")["annealing"]


def test_students_on_the_teachers_table_keep_it_in_the_runs_cache(ablation_run):
    """The static student's Model2Vec table is stored once under artifacts/<profile>/.cache, not in a stage."""
    cache = ablation_run.dir / ".cache"
    assert ablation_run.student("static-augmented").memory == str(cache)
    assert ablation_run.student("tfidf_lr-augmented").get_params().get("memory") is None
    assert len(list(cache.rglob("output.pkl"))) == 1


def test_second_run_is_all_cached(ablation_run):
    built = []
    run = Run("tiny", ablation_run.cfg, ablation_run.dir.parent, ablation_run.reports.parent, progress=False,
              log=lambda line: built.append(line) if "built" in line else None)
    ablation.run_ablation(run)
    assert built == []


def test_a_transfer_student_is_keyed_as_its_distilled_twin_plus_the_transfer_set(ablation_run):
    """One student stage for every mode: what the key of `bilstm-augmented` hashes is its distilled twin's, with the
    transfer set's key and [ablation.bilstm] over [students.bilstm]."""
    ablation.build_all(ablation_run)
    twin, augmented = (json.loads((ablation_run.dir / "students" / f"bilstm-{mode}" / "stage.json").read_text())
                       ["inputs"] for mode in ("distilled", "augmented"))
    assert set(augmented) - set(twin) == {"transfer"} and augmented["transfer"] == ablation_run.key("transfer")
    assert augmented["params"] == {**twin["params"], **ablation_run.cfg["ablation"]["bilstm"]} != twin["params"]
    assert augmented["soft_labels"] == twin["soft_labels"] == ablation_run.key("soft_labels")
    assert {k: v for k, v in augmented.items() if k not in ("mode", "params", "transfer")} == \
        {k: v for k, v in twin.items() if k not in ("mode", "params")}


def test_paired_gain_interval_brackets_the_gain():
    rng = np.random.default_rng(0)
    hard = rng.random(500) < 0.7
    better = hard | (rng.random(500) < 0.2)
    low, high = ablation.paired_gain_ci(better, hard)
    assert 0 < low <= better.mean() - hard.mean() <= high
    gold = np.ones(500, dtype=int)   # the same interval through the metric, from the labels
    assert ACCURACY.difference_ci(gold, better.astype(int), hard.astype(int)) == pytest.approx(
        (better.mean() - hard.mean(), low, high))


def test_cli_rejects_an_unknown_student_in_one_line(tmp_path, capsys):
    code = ablation.main(["--profile", "smoke", "--students", "tfidf_lr,nope", "--artifacts", str(tmp_path / "a"),
                          "--reports", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown student(s) nope" in err
    assert not (tmp_path / "a").exists()


def test_seed_ensembles_script_retrains_the_runs_bilstm_and_averages_seeds(ablation_run, tmp_path):
    """scripts/seed_ensembles.py: its seed-13 BiLSTM is the run's bilstm-augmented (the same recipe, so the seed is
    the only difference between members), and its table has one row per seed, ensemble and mix."""
    from scripts import seed_ensembles
    texts = ablation_run.split()["text"].tolist()[:50]
    retrained = seed_ensembles.train_bilstm(ablation_run, 13, "augmented")
    np.testing.assert_allclose(retrained.predict_proba(texts),
                               ablation_run.student("bilstm-augmented").predict_proba(texts), atol=1e-6)
    assert not np.allclose(seed_ensembles.train_bilstm(ablation_run, 14, "augmented").predict_proba(texts),
                           retrained.predict_proba(texts))

    out = tmp_path / "seeds.csv"
    assert seed_ensembles.main(["--profile", "tiny", "--artifacts", str(ablation_run.dir.parent), "--seeds", "13,14",
                                "--out", str(out)]) == 0
    table = pd.read_csv(out)
    others = "+".join(n for n in ablation_run.cfg["students"]["ensemble"] if n != "bilstm")
    assert table["model"].tolist() == ["bilstm seed 13", f"1 bilstm(s) + {others}", "bilstm seed 14",
                                       "2 bilstms (seeds 13..14)", f"2 bilstm(s) + {others}"]
    np.testing.assert_allclose(table["of_teacher"], table["test_accuracy"] / table["teacher_accuracy"], atol=1e-3)
    assert ((table["ci_low"] <= table["test_accuracy"]) & (table["test_accuracy"] <= table["ci_high"])).all()


def test_member_ensembles_script_scores_ensembles_and_pairs_them_with_the_first(ablation_run, tmp_path, capsys):
    """scripts/member_ensembles.py: a one-member "ensemble" scores as the student itself, the first ensemble is the
    paired reference (no gain of its own), and a member that was not trained is one error line."""
    from scripts import member_ensembles
    run_args = ["--profile", "tiny", "--artifacts", str(ablation_run.dir.parent)]
    out = tmp_path / "ensembles.csv"
    assert member_ensembles.main([*run_args, "--ensemble", "tfidf_lr+nb+bilstm", "--ensemble", "bilstm",
                                  "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index(["split", "members"])
    texts, gold = datasets.texts_labels(ablation_run.split(), "test")
    alone = float(np.mean(ablation_run.student("bilstm-augmented").predict(texts) == gold))
    assert table.loc[("test", "bilstm"), "accuracy"] == round(alone, 4)
    reference = table.loc[("test", "tfidf_lr+nb+bilstm")]
    assert abs(table.loc[("test", "bilstm"), "gain"] - (alone - reference["accuracy"])) <= 1e-4
    assert np.isnan(reference["gain"]) and np.isnan(table.loc[("dev", "bilstm"), "gain"])
    capsys.readouterr()
    assert member_ensembles.main([*run_args, "--ensemble", "bilstm+nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope-augmented" in err


def test_the_born_again_switch_is_not_taken_for_its_overrides():
    """[ablation] born_again = true turns the student on; its settings stay [students.born_again]'s, while a
    student's [ablation.<name>] table overrides its own for the transfer-set modes only."""
    from types import SimpleNamespace

    from distill.config import apply_overrides, load_profile
    from distill.student_stage import student_params
    run = SimpleNamespace(cfg=apply_overrides(load_profile("full"), ["ablation.born_again=true"]))
    assert student_params(run, "born_again", "augmented") == run.cfg["students"]["born_again"]
    assert student_params(run, "bilstm", "augmented")["epochs"] == run.cfg["ablation"]["bilstm"]["epochs"]
    assert student_params(run, "bilstm", "distilled")["epochs"] == run.cfg["students"]["bilstm"]["epochs"]
