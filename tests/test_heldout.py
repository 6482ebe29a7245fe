"""Held-out evaluation: metrics with bootstrap intervals, ECE, and the report files."""
from __future__ import annotations

import json
import re

import matplotlib
import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             f1_score, recall_score)

from helpers import write_images
from featcache.errors import FeatcacheError
from featcache.evaluate import evaluate_predictions
from featcache.evaluate.heldout import expected_calibration_error, metrics_from_confusion
from featcache.report.heldout import misclassified_html, write_heldout_report

matplotlib.use("Agg")


def noisy_probs(y, K, strength=0.6, seed=0):
    """Probabilities leaning towards the true class, so most (not all) are right."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(K), len(y))
    p[np.arange(len(y)), y] += strength
    return p / p.sum(axis=1, keepdims=True)


def sk_metrics(y, pred):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"accuracy": accuracy_score(y, pred),
                "balanced_accuracy": balanced_accuracy_score(y, pred),
                "f1_macro": f1_score(y, pred, average="macro")}


@pytest.fixture
def case():
    rng = np.random.default_rng(3)
    K, n = 4, 150
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])  # class 3 ("d") has no test image
    probs = noisy_probs(y, K)
    probs[:5, 3] = 5.0  # ... but is predicted a few times
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs, ["a", "b", "c", "d"], [f"/x/img{i}.jpg" for i in range(n)]


def test_point_metrics_equal_sklearn_with_a_missing_and_an_extra_predicted_class(case):
    y, probs, names, paths = case
    rep = evaluate_predictions(y, probs, names, paths, n_boot=200)
    pred = probs.argmax(axis=1)
    assert (pred == 3).sum() >= 5
    for m, v in sk_metrics(y, pred).items():
        assert getattr(rep, m)[0] == pytest.approx(v, abs=1e-12), m
    assert np.array_equal(rep.confusion, confusion_matrix(y, pred, labels=range(4)))
    assert rep.recall[:3] == pytest.approx(recall_score(y, pred, labels=[0, 1, 2], average=None))
    assert np.isnan(rep.recall[3]) and rep.support == np.bincount(y, minlength=4).tolist()
    assert rep.missing_classes == ["d"]
    d = rep.to_dict()
    assert d["per_class"][3] == {"class": "d", "recall": None, "support": 0}
    assert "balanced accuracy averages the recall of the classes present only" in rep.summary()
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("seed", range(6))
def test_confusion_metrics_equal_sklearn_on_resamples(seed):
    """The bootstrap's vectorised metrics equal sklearn's on arbitrary label sets."""
    rng = np.random.default_rng(seed)
    K = 5
    y = rng.integers(0, K - 1 - seed % 2, 40)  # one or two classes absent from y
    pred = np.where(rng.random(40) < 0.6, y, rng.integers(0, K, 40))
    cms = np.stack([confusion_matrix(y, pred, labels=range(K)),
                    confusion_matrix(y[:15], pred[:15], labels=range(K))])
    got = metrics_from_confusion(cms)
    for i, (yy, pp) in enumerate([(y, pred), (y[:15], pred[:15])]):
        for m, v in sk_metrics(yy, pp).items():
            assert got[m][i] == pytest.approx(v, abs=1e-12), m


def test_intervals_contain_the_estimate_and_are_seeded(case):
    y, probs, names, paths = case
    a = evaluate_predictions(y, probs, names, paths, n_boot=500, seed=7)
    b = evaluate_predictions(y, probs, names, paths, n_boot=500, seed=7)
    c = evaluate_predictions(y, probs, names, paths, n_boot=500, seed=8)
    for m in ("accuracy", "balanced_accuracy", "f1_macro"):
        value, lo, hi = getattr(a, m)
        assert lo < value < hi and hi - lo < 0.4, m
        assert getattr(b, m) == getattr(a, m)
    assert c.accuracy[0] == a.accuracy[0] and c.accuracy[1:] != a.accuracy[1:]
    assert a.to_dict()["bootstrap"] == {"n_boot": 500, "seed": 7,
                                        "method": "percentile, stratified by true class"}


def test_interval_narrows_with_more_images():
    y_small = np.repeat([0, 1], 20)
    y_big = np.repeat([0, 1], 400)
    small = evaluate_predictions(y_small, noisy_probs(y_small, 2, 0.3), ["a", "b"],
                                 ["p"] * 40)
    big = evaluate_predictions(y_big, noisy_probs(y_big, 2, 0.3), ["a", "b"], ["p"] * 800)
    width = lambda r: r.accuracy[2] - r.accuracy[1]  # noqa: E731
    assert width(big) < width(small) / 2


def test_ece_equals_a_hand_computation():
    probs = np.array([[0.9, 0.1], [0.25, 0.75], [0.55, 0.45], [0.38, 0.62], [0.93, 0.07]])
    y = np.array([0, 0, 0, 1, 0])  # the 0.75 one is wrong
    rep = evaluate_predictions(y, probs, ["a", "b"], ["p"] * 5, n_boot=10)
    # bins of width 1/15: 0.9 and 0.93 share (13/15, 14/15]; the others are alone
    hand = (2 * abs(1 - 0.915) + abs(0 - 0.75) + abs(1 - 0.55) + abs(1 - 0.62)) / 5
    assert rep.ece == pytest.approx(hand, abs=1e-12)
    rel = rep.reliability
    assert len(rel["count"]) == 15 and sum(rel["count"]) == 5 and rel["count"][13] == 2
    assert rel["confidence"][13] == pytest.approx(0.915) and rel["accuracy"][11] == 0.0
    assert np.isnan(rel["accuracy"][0])
    assert rep.to_dict()["reliability"]["accuracy"][0] is None


def test_ece_is_zero_when_confidence_matches_accuracy():
    conf = np.full(10, 0.7)
    correct = np.array([1] * 7 + [0] * 3, dtype=bool)
    ece, _ = expected_calibration_error(conf, correct)
    assert ece == pytest.approx(0.0, abs=1e-12)


def test_misclassified_are_listed_most_confident_first(case):
    y, probs, names, paths = case
    rep = evaluate_predictions(y, probs, names, paths, n_boot=50)
    pred = probs.argmax(axis=1)
    assert len(rep.misclassified) == int((pred != y).sum())
    probs_listed = [m.prob for m in rep.misclassified]
    assert probs_listed == sorted(probs_listed, reverse=True)
    first = rep.misclassified[0]
    i = paths.index(first.path)
    assert (first.true, first.predicted) == (names[y[i]], names[pred[i]])
    assert first.prob == pytest.approx(probs[i].max())


@pytest.mark.parametrize("kwargs, match", [
    (dict(probs=np.ones((3, 3)) / 3), "shape"),
    (dict(y_true=np.array([0, 1, 2])), r"0\.\.1"),
    (dict(paths=["a"]), "paths"),
    (dict(probs=np.array([[np.nan, 1], [0.5, 0.5], [1, 0]])), "NaN"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = dict(y_true=np.array([0, 1, 1]), probs=np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]),
                class_names=["a", "b"], paths=["x", "y", "z"])
    with pytest.raises(FeatcacheError, match=match):
        evaluate_predictions(**{**args, **kwargs})


@pytest.fixture
def image_report(tmp_path):
    names = ["cat", "<b>dog&co</b>"]
    rels = write_images(tmp_path / "test", {"cat": 6, "<b>dog&co</b>".replace("/", "_"): 6})
    paths = [str(tmp_path / "test" / r) for r in rels]
    y = np.repeat([0, 1], 6)
    probs = np.tile([0.8, 0.2], (12, 1))  # everything predicted "cat": 6 errors
    probs[6:8] = [0.1, 0.9]
    (tmp_path / "test" / "cat" / "img_000.jpg").write_bytes(b"")  # correct, so not shown
    bad = tmp_path / "test" / rels[-1]
    bad.write_bytes(b"not an image")  # misclassified and unreadable
    return evaluate_predictions(y, probs, names, paths, n_boot=100), tmp_path / "out"


def test_report_files_and_self_contained_html(image_report):
    rep, out = image_report
    files = write_heldout_report(rep, out)
    assert [f.name for f in files] == ["confusion_matrix.png", "reliability.png",
                                       "report.json", "report.html"]
    for f in files[:2]:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "report.json").read_text())
    assert doc["accuracy"]["value"] == pytest.approx(8 / 12) and len(doc["misclassified"]) == 4
    page = (out / "report.html").read_text()
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert page.count('src="data:image/png;base64,') == 2
    assert page.count('src="data:image/jpeg;base64,') == 3  # 4 errors, one unreadable
    assert "no thumbnail" in page
    assert "&lt;b&gt;dog&amp;co&lt;/b&gt;" in page and "<b>dog&co</b>" not in page
    assert "Misclassified images (4)" in page


def test_thumbnail_gallery_is_capped_with_a_note(image_report):
    rep, _ = image_report
    part = misclassified_html(rep.misclassified, limit=2)
    assert part.count("<figure>") == 2
    assert "Showing the 2 most confident of 4 misclassified images" in part
    assert "No misclassified images" in misclassified_html([])


def test_bootstrap_is_stratified_by_class():
    """Class 0 always right, class 1 always wrong: with every class's count kept in each
    replicate, every replicate scores the same (a plain bootstrap would vary)."""
    y = np.repeat([0, 1], [30, 10])
    probs = np.tile([0.9, 0.1], (40, 1))
    rep = evaluate_predictions(y, probs, ["a", "b"], ["p"] * 40, n_boot=300)
    assert rep.accuracy == pytest.approx((0.75, 0.75, 0.75))
    assert rep.balanced_accuracy == pytest.approx((0.5, 0.5, 0.5))
    f1 = 2 * 30 / (2 * 30 + 10) / 2
    assert rep.f1_macro == pytest.approx((f1, f1, f1))
