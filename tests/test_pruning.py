"""Feed-forward pruning of a transformer student: the most important neurons kept, the network otherwise intact."""
import importlib.util

import numpy as np
import pytest
import torch

from distill.errors import UserError
from distill.students import TransformerClassifier, build
from distill.students.pruning import kept_neurons, neuron_importance, prune_feed_forward
from distill.teacher import load_pretrained

TEXTS = ["a gorgeous witty movie", "the plot never takes off", "charming and affecting", "dull and routine",
         "a delight from start to finish", "strictly by the numbers"] * 4
GOLD = np.array([0, 1, 0, 1, 0, 1] * 4)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, mr_texts):
    from tests.conftest import make_tiny_bert
    return make_tiny_bert(tmp_path_factory.mktemp("pruning_teacher"), mr_texts[:300])


def test_the_pruned_network_computes_what_its_kept_neurons_did(teacher_dir):
    """Silencing the dropped neurons in the unpruned network gives the pruned network's logits exactly."""
    tokenizer, model = load_pretrained(str(teacher_dir))
    model.eval()
    size = model.config.intermediate_size
    original = {k: v.clone() for k, v in model.state_dict().items()}
    kept = prune_feed_forward(model, 0.5, tokenizer, TEXTS, 16)
    assert model.config.intermediate_size == kept_neurons(size, 0.5) == size // 2
    assert all(len(rows) == size // 2 and np.all(np.diff(rows) > 0) for rows in kept)

    _, silenced = load_pretrained(str(teacher_dir))
    silenced.load_state_dict(original)
    silenced.eval()
    with torch.no_grad():
        for layer, rows in zip(silenced.base_model.encoder.layer, kept):
            dropped = np.setdiff1d(np.arange(size), rows)
            layer.output.dense.weight[:, dropped] = 0
        features = tokenizer(TEXTS[:6], padding=True, return_tensors="pt")
        assert torch.allclose(model(**features).logits, silenced(**features).logits, atol=1e-5)


def test_it_keeps_the_neurons_that_carry_the_most(teacher_dir):
    tokenizer, model = load_pretrained(str(teacher_dir))
    with torch.no_grad():
        model.base_model.encoder.layer[0].output.dense.weight[:, 7] *= 100   # neuron 7 now moves the output most
        model.base_model.encoder.layer[0].output.dense.weight[:, 3] = 0      # neuron 3 moves nothing
    scores = neuron_importance(model, tokenizer, TEXTS, 16)
    assert np.argmax(scores[0]) == 7 and scores[0][3] == 0
    kept = prune_feed_forward(model, 0.25, tokenizer, TEXTS, 16)
    assert 7 in kept[0] and 3 not in kept[0]


def test_a_pruned_student_trains_saves_and_reloads_as_its_own_architecture(teacher_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification
    est = TransformerClassifier(teacher=str(teacher_dir), layers=1, ffn_keep=0.25, max_steps=2, batch_size=8,
                                max_length=16, progress=False).fit(TEXTS, GOLD)
    _, teacher = load_pretrained(str(teacher_dir))
    assert est.module_.config.intermediate_size == teacher.config.intermediate_size // 4
    est.module_.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    features = est.tokenizer_(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(reloaded(**features).logits, est.module_(**features).logits, atol=1e-5)
    assert est.predict_proba(TEXTS).shape == (len(TEXTS), 2)


def test_pruning_random_weights_or_out_of_range_shares_is_refused(teacher_dir):
    with pytest.raises(UserError, match="set init to teacher or pretrained, or ffn_keep = 1"):
        TransformerClassifier(teacher=str(teacher_dir), init="fresh", ffn_keep=0.5, layers=1, max_steps=1,
                              progress=False).fit(TEXTS, GOLD)
    with pytest.raises(UserError, match=r"choose a value in \(0, 1\]"):
        kept_neurons(64, 1.5)
    assert build("transformer_lean", {"ffn_keep": 0.5}).ffn_keep == 0.5


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_the_latency_study_times_each_shape_in_openvino_int8(teacher_dir, tmp_path, mr_texts):
    """scripts/pruning_latency_study.py: each LAYERS:FFN_KEEP shape cut, pruned, quantised and timed; a bad shape is
    one error line."""
    import pandas as pd

    from scripts.pruning_latency_study import main
    split = tmp_path / "split.parquet"
    pd.DataFrame({"text": mr_texts[:40], "label": [0, 1] * 20,
                  "split": ["train"] * 30 + ["test"] * 10}).to_parquet(split)
    table = tmp_path / "shapes.csv"
    assert main([str(teacher_dir), "--split", str(split), "--shape", "2:1", "--shape", "1:0.25", "--csv", str(table),
                 "--calibration-texts", "8", "--timing-texts", "3", "--passes", "1"]) == 0
    rows = pd.read_csv(table).to_dict("records")
    assert [(r["layers"], r["ffn_keep"], r["intermediate_size"]) for r in rows] == [(2, 1.0, 64), (1, 0.25, 16)]
    assert rows[0]["vs_first_shape"] == 1.0 and rows[1]["params"] < rows[0]["params"]
    assert all(r["batch1_model_ms_median"] > 0 and r["timed_texts"] == 3 for r in rows)
    assert main([str(teacher_dir), "--split", str(split), "--shape", "6:1.5"]) == 2
