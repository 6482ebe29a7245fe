"""One voice: every verdict comes from featcache.evaluate.verdicts, on the same numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score
from helpers import planted
from helpers import clean

from featcache.evaluate.diagnosis import curve_numbers, diagnose
from featcache.evaluate import cross_validate_heads, make_splits, sweep, verdicts
from featcache.evaluate._audit import audit
from featcache.evaluate.curve import CurveResult
from featcache.evaluate.verdicts import diagnosis_conclusion, learning_curve_verdict
from featcache.cache.features import Features
from featcache.files import jsonable
from featcache.report.diagnosis import fmt, write_diagnosis


def curve_with(gain, gap, metric="accuracy", grouped=False):
    """A CurveResult whose tail gains ``gain`` per doubling and ends ``gap`` below train."""
    fractions = [0.25, 0.5, 1.0]
    n_train = [100.0, 200.0, 400.0]
    val = 0.80 + np.nan_to_num(gain) * np.log2(np.asarray(n_train) / 100.0)
    val_rows = np.repeat(val[:, None], 3, axis=1)
    train_rows = val_rows + gap
    plan = make_splits(clean(n=60), 3)
    if grouped:
        plan.groups = np.arange(60)
    return CurveResult("logreg", metric, fractions, n_train, train_rows, val_rows,
                       slope=float("nan"), gain_per_doubling=gain, tail=0.5, plan=plan)


@pytest.mark.parametrize("gain, gap, kind", [(0.005, 0.07, "regularise"),
                                              (0.02, 0.0, "more_data"),
                                              (0.0, 0.01, "capacity"),
                                              (float("nan"), 0.2, "unknown")])
def test_curve_and_diagnose_give_the_same_conclusion(gain, gap, kind):
    cur = curve_with(gain, gap, metric="balanced_accuracy")
    assert math.isclose(cur.final_gap, gap, abs_tol=1e-12)
    assert cur.verdict().kind == kind
    numbers = {"metric": "balanced_accuracy",
               "leakage": {"n_label_conflicts": 0, "n_near_duplicate_groups": 0,
                           "threshold": 0.95, "threshold_source": "default",
                           "keras_flow_val_fraction_with_train_duplicate": 0.0},
               "regularisation": {"param": "C", "best_at_edge": None,
                                  "settings": [{"value": 1.0, "train": 0.9, "val": 0.8,
                                                "gap": gap}] * 2,
                                  "best": {"value": 1.0, "train": 0.9, "val": 0.8, "gap": gap}},
               "learning_curve": curve_numbers(cur),
               "per_class": {"classes": [{"class": "a", "recall": 0.8, "confused_with": None}],
                             "mean_recall": 0.8, "worst": "a"},
               "class_balance": {"imbalance_ratio": 1.0, "smallest_class": "a"}}
    said = diagnosis_conclusion(numbers)
    assert cur.advice() in said, (cur.advice(), said)
    # The old diagnose said "still rises slowly" here while curve said "regularise more".
    assert not any("rises slowly" in s for s in said)


def test_the_issue_case_says_regularise_in_both():
    v = learning_curve_verdict(0.005, 0.07, "accuracy")
    assert v.kind == "regularise" and "regularise more" in v.sentence
    assert verdicts.GAIN_RISING > 0.005 and verdicts.GAP_MODERATE < 0.07


def test_diagnose_repeats_the_curve_advice_it_computed():
    diag = diagnose(clean(n=150), "logreg", grid=[0.01, 1])
    assert diag.curve.advice() in diag.conclusion
    assert diag.numbers["learning_curve"]["verdict"] == diag.curve.verdict().kind


def imbalanced(n_major=120, n_minor=20, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_major, int), np.ones(n_minor, int)]
    X = rng.standard_normal((len(y), d)) + 0.8 * y[:, None]
    paths = np.array([f"c{c}/{i}.png" for i, c in enumerate(y)])
    return Features(X.astype(np.float32), y, paths, ["c0", "c1"],
                    np.array([f"{i:064x}" for i in range(len(y))]))


def test_train_score_and_gap_are_in_the_chosen_metric():
    feats = imbalanced()
    res = cross_validate_heads(feats, "logreg", folds=3, metric="balanced_accuracy")
    h = res.heads["logreg"]
    from featcache.evaluate._estimators import resolve_heads
    est = resolve_heads("logreg")["logreg"]
    for j, (tr, _) in enumerate(res.plan.splits):
        model = clone(est).fit(feats.X[tr], feats.y[tr])
        want = balanced_accuracy_score(feats.y[tr], model.predict(feats.X[tr]))
        assert h.folds["train_score"][j] == pytest.approx(want, abs=1e-9)
        assert h.folds["gap"][j] == pytest.approx(want - h.folds["balanced_accuracy"][j])
    # On imbalanced data train accuracy is not train balanced accuracy: the old gap mixed them.
    assert not np.allclose(h.folds["train_accuracy"], h.folds["train_score"])


def test_sweep_gap_is_in_the_chosen_metric():
    res = sweep(imbalanced(), "logreg", grids=[0.01, 1], folds=3, metric="balanced_accuracy")
    s = res.heads["logreg"].scores
    np.testing.assert_allclose(s["gap"], s["train_score"] - s["balanced_accuracy"])


def test_diagnose_reports_one_quantity_identically_everywhere(tmp_path):
    feats, _ = planted(n_clips=30, n_single=30, seed=4)
    diag = diagnose(feats, "logreg", grid=[0.01, 0.1, 1], metric="balanced_accuracy")
    leak, reg = diag.numbers["leakage"], diag.numbers["regularisation"]
    # Grouped validation score at the best setting: the leakage and the sweep agree exactly.
    assert leak["grouped_mean"] == reg["best"]["val"]
    h = diag.sweep.heads[diag.head]
    assert reg["best"]["val"] == float(np.nanmean(h.scores["balanced_accuracy"][h.best_index]))
    assert reg["best"]["gap"] == pytest.approx(reg["best"]["train"] - reg["best"]["val"])
    # The random-split sweep reuses the same splits as the audit's featcache CV check.
    assert diag.random_sweep.plan.description == diag.audit.splits["featcache_cv"]["description"]
    files = write_diagnosis(diag, tmp_path)
    saved = json.loads(files.json.read_text())
    assert saved["numbers"]["leakage"]["grouped_mean"] == saved["numbers"]["regularisation"][
        "best"]["val"]
    page = files.html.read_text()
    assert page.count(f">{fmt(leak['grouped_mean'])}<") >= 2


def test_oversized_group_rule_is_shared_by_audit_and_diagnose():
    feats = clean(n=120, d=32)
    common = 1e3 * np.ones(feats.X.shape[1], np.float32)
    feats = Features(feats.X + common, feats.y, feats.paths, feats.class_names, feats.sha256)
    rep = audit(feats)
    why = verdicts.unusable_grouping(rep.groups, 5)
    assert why is not None
    # The audit used to advise --group-by near-duplicates, which diagnose then refused.
    assert not any("Use --group-by near-duplicates" in f for f in rep.findings), rep.findings
    assert any(why in f for f in rep.findings), rep.findings
    assert diagnose(feats, "logreg", grid=[1.0]).numbers["leakage"]["grouping_unusable"] == why


def test_one_json_sanitiser_writes_nan_as_null():
    doc = jsonable({"a": np.float32("nan"), 1: np.int64(3), "p": Path("x"),
                    "arr": np.array([1.0, np.inf]), "flag": np.bool_(True)})
    assert doc == {"a": None, "1": 3, "p": "x", "arr": [1.0, None], "flag": True}
    json.dumps(doc, allow_nan=False)


def test_diagnose_builds_each_set_of_splits_once(monkeypatch):
    import featcache.evaluate.splits as splits
    built = {"grouped": 0, "random": 0}

    class Grouped(splits.StratifiedGroupKFold):
        def __init__(self, *a, **k):
            built["grouped"] += 1
            super().__init__(*a, **k)

    class Random(splits.StratifiedKFold):
        def __init__(self, *a, **k):
            built["random"] += 1
            super().__init__(*a, **k)
    monkeypatch.setattr(splits, "StratifiedGroupKFold", Grouped)
    monkeypatch.setattr(splits, "StratifiedKFold", Random)
    feats, _ = planted(n_clips=30, n_single=30, seed=4)
    diag = diagnose(feats, "logreg", grid=[0.1, 1])
    assert "group" in diag.numbers["splits"]
    assert built == {"grouped": 1, "random": 1}  # was 3 grouped and 2 random
