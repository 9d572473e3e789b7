"""Typed settings (distill/settings.py): every section of a profile checked, unknown keys refused everywhere (profile
files, `--set`, student sections, ablation overrides), and the dicts that flow on into stage keys unchanged."""
from __future__ import annotations

import shutil
import tomllib
from typing import Any

import pytest

from distill import config, labelling, settings
from distill import students as zoo
from distill.cli import main
from distill.config import apply_overrides, load_profile
from distill.errors import UserError

PROFILE = load_profile("default")


def raw_profile(name: str) -> dict:
    """A profile as TOML reads it, merged over what it inherits, checked by nothing."""
    with open(config.CONFIG_DIR / f"{name}.toml", "rb") as f:
        cfg = tomllib.load(f)
    parent = cfg.pop("inherit", None)
    return merged(raw_profile(parent), cfg) if parent else cfg


def merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# --- what flows on stays what it was ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", config.available_profiles())
def test_a_shipped_profile_is_valid_and_flows_on_as_toml_reads_it(name):
    assert load_profile(name) == raw_profile(name)


def test_overrides_are_stored_as_the_key_declares_them():
    cfg = apply_overrides(PROFILE, ["teacher.lr=1", "teacher.model=2024", "students.bilstm.hidden=256",
                                    "data.split=[0.7, 0.2, 0.1]"])
    assert cfg["teacher"]["lr"] == 1.0 and isinstance(cfg["teacher"]["lr"], float)
    assert cfg["teacher"]["model"] == "2024"
    assert cfg["students"]["bilstm"]["hidden"] == 256 and isinstance(cfg["students"]["bilstm"]["hidden"], int)
    assert cfg["data"]["split"] == [0.7, 0.2, 0.1]
    assert PROFILE == raw_profile("default"), "the profile overridden must not change"


def test_a_student_key_the_profile_leaves_out_can_be_set():
    cfg = apply_overrides(PROFILE, ["students.bilstm.pca_dims=64", "students.born_again.epochs=2"])
    assert cfg["students"]["bilstm"]["pca_dims"] == 64 and cfg["students"]["born_again"] == {"epochs": 2}


# --- one-line errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("students.bilstm.hiden=3", "--set students.bilstm.hiden: unknown key 'hiden' (did you mean 'hidden'?); known: "),
    ("ablation.static.batchsize=3", "unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ("students.bilstm.progress=false", "--set students.bilstm.progress: unknown key 'progress'"),
    ("students.bilstm.loss=ce", "students.bilstm.loss must be one of mse, kl, mix, not 'ce'"),
    ("students.ensemble=[\"nb\", \"bilstmm\"]", "unknown student(s) bilstmm in students.ensemble; choose from"),
    ("ablation.anneal=[\"svm\"]", "unknown student(s) svm in ablation.anneal"),
    ("students.modes=[\"hard\"]", "students.modes[0] must be one of baseline, distilled, not 'hard'"),
    ("teacher.class_weight=inverse", "teacher.class_weight must be one of none, balanced, not 'inverse'"),
    ("labelling.shard_size=0", "--set labelling.shard_size=0: must be a whole number of at least 1"),
    ("labelling.tolerance=-0.5", "--set labelling.tolerance=-0.5: must be 0 or more"),
    ("transfer.p_mask=0.95", "transfer.p_mask + transfer.p_sub must be at most 1, got 1.05"),
    ("data.split=[0.5, 0.5]", "data.split must be three positive fractions summing to 1, got [0.5, 0.5]"),
    ("data.name=true", "--set data.name=True: expected text, like the profile's 'mr'"),
    ("students.bilstm=3", "--set students.bilstm=3: expected a table"),
])
def test_a_bad_override_is_one_line_naming_the_key(override, message):
    with pytest.raises(UserError) as exc:
        apply_overrides(PROFILE, [override])
    assert message in str(exc.value) and "\n" not in str(exc.value)


PROFILE_CASES = {
    "student-typo": ("[students.bilstm]\nhiden = 3",
                     "configs/mine.toml: unknown key 'hiden' in [students.bilstm] (did you mean 'hidden'?); known: "),
    "ablation-typo": ("[ablation.static]\nepoch = 3", "unknown key 'epoch' in [ablation.static] (did you mean"),
    "ablation-student": ("[ablation.svm]\nepochs = 1", "unknown key 'svm' in [ablation]; known: students"),
    "section-typo": ("[tacher]\nlr = 1e-4", "unknown section 'tacher' in the profile (did you mean 'teacher'?)"),
    "run-param": ("[students.static]\nmemory = \"/tmp\"", "unknown key 'memory' in [students.static]"),
    "text-for-int": ("[teacher]\nepochs = \"2\"", "configs/mine.toml: teacher.epochs must be a whole number, not '2'"),
    "nan": ("[teacher]\nlr = nan", "teacher.lr must be a finite number, not nan"),
    "float-for-int": ("[students.bilstm]\nhidden = 64.0", "students.bilstm.hidden must be a whole number, not 64.0"),
    "range": ("[students.bilstm]\ndropout = 1.5", "students.bilstm.dropout must be between 0 and 1, not 1.5"),
    "share": ("[students.transformer_lean]\nffn_keep = 0",
              "students.transformer_lean.ffn_keep must be greater than 0 and at most 1, not 0"),
    "choice": ("[labelling]\nbackend = \"tensorrt\"",
               "labelling.backend must be one of auto, torch, onnx, ort-opt, onnx-int8"),   # then the optional engines
}


@pytest.fixture()
def profiles(tmp_path, monkeypatch):
    """configs/ with the default profile and room for another: `write(body, inherit=True)` writes mine.toml."""
    shutil.copy(config.CONFIG_DIR / "default.toml", tmp_path / "default.toml")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)

    def write(body: str, inherit=True):
        (tmp_path / "mine.toml").write_text(('inherit = "default"\n' if inherit else "") + body + "\n")
    return write


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_a_bad_profile_file_is_one_line_naming_the_key(case, profiles):
    body, message = PROFILE_CASES[case]
    profiles(body)
    with pytest.raises(UserError) as exc:
        load_profile("mine")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_profile_that_inherits_nothing_is_told_what_it_misses(profiles):
    profiles("[data]\nname = \"mr\"", inherit=False)
    with pytest.raises(UserError, match=r"configs/mine.toml: data.text_col is not set; .* inherit = \"default\""):
        load_profile("mine")


def test_the_cli_stops_on_a_typo_in_a_student_section_before_any_work(profiles, tmp_path, capfd):
    profiles("[students.bilstm]\nhiden = 3")
    code = main(["--profile", "mine", "--artifacts", str(tmp_path / "artifacts"), "--quiet"])
    err = capfd.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("error: configs/mine.toml: unknown key 'hiden'")
    assert not (tmp_path / "artifacts").exists()


# --- students: the section follows the class ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(zoo.REGISTRY))
def test_a_student_section_is_what_the_class_takes_less_what_the_run_sets(name):
    cls = zoo.REGISTRY[name]
    model = settings.student_settings(cls)
    assert set(model.model_fields) == set(cls().get_params()) - set(zoo.RUN_PARAMS)
    untyped = [k for k, f in model.model_fields.items() if f.annotation is Any]
    assert not untyped, f"give {untyped} a type in settings._param_types (their default is None)"


def test_a_student_registered_later_gets_its_section(monkeypatch):
    from tests.keyword_student import KeywordCounts
    monkeypatch.setitem(zoo.REGISTRY, "keyword", KeywordCounts)
    cfg = apply_overrides(PROFILE, ['students.names=["keyword"]', "students.keyword.alpha=2"])
    assert cfg["students"]["keyword"] == {"alpha": 2.0}
    with pytest.raises(UserError, match="unknown key 'alpah' .did you mean 'alpha'"):
        apply_overrides(PROFILE, ["students.keyword.alpah=2"])


def test_build_refuses_a_key_the_student_does_not_take_but_takes_what_the_run_adds():
    with pytest.raises(UserError, match=r"student bilstm has no parameter 'hiden' \(did you mean 'hidden'\?\)"):
        zoo.build("bilstm", {"hiden": 3})
    est = zoo.build("tfidf_lr", {"C": 2.0, "progress": False, "dev_metric": object(), "class_weights": [1.0, 2.0]})
    assert est.C == 2.0 and est.class_weights == [1.0, 2.0]


# --- labelling: one place for its defaults ------------------------------------------------------------------------
def test_labelling_settings_fill_what_a_section_leaves_out_from_the_default_profile():
    assert labelling.settings({}) == PROFILE["labelling"]
    assert labelling.settings({"labelling": {"batch_size": 7}}) == {**PROFILE["labelling"], "batch_size": 7}
    with pytest.raises(UserError, match="labelling.validation_texts must be a whole number, not 2.5"):
        labelling.settings({"labelling": {"validation_texts": 2.5}})
    with pytest.raises(UserError, match=r"unknown key 'backnd' in \[labelling\] \(did you mean 'backend'\?\)"):
        labelling.settings({"labelling": {"backnd": "torch"}})
