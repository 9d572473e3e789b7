import pandas as pd


def test_tiny_run_writes_accuracy_table(tiny_run):
    table = pd.read_csv(tiny_run.reports / "accuracy.csv")
    kinds = table["kind"].value_counts().to_dict()
    assert kinds["teacher"] == 1 and kinds["baseline"] >= 3 and kinds["distilled"] >= 3 and kinds["ensemble"] >= 1
    assert {"model", "kind", "accuracy", "ci_low", "ci_high", "macro_f1", "agreement", "params",
            "train_seconds"} <= set(table.columns)
    assert ((table["ci_low"] <= table["accuracy"]) & (table["accuracy"] <= table["ci_high"])).all()
    assert table.loc[table["kind"] == "teacher", "agreement"].item() == 1.0
