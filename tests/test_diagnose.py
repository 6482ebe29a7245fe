"""``diagnose``: the overfitting report on planted leaky data and on clean data."""
import json
import re

import numpy as np
from click.testing import CliRunner

from featcache.evaluate.diagnosis import diagnose
from featcache.cache.features import Features
from featcache.report.diagnosis import write_diagnosis
from featcache.report.html import Section, render_html
from helpers import clean, planted

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"




def test_leaky_data_is_diagnosed_with_evidence_and_a_standalone_report(tmp_path):
    feats, _ = planted(seed=4)
    diag = diagnose(feats, "logreg", grid=[1e-3, 1e-2, 0.1, 1, 10])
    assert not any(tmp_path.iterdir())
    files = write_diagnosis(diag, tmp_path)
    leak = diag.numbers["leakage"]
    assert leak["n_near_duplicate_groups"] == 60
    assert leak["inflation"] >= 0.15, leak
    assert diag.conclusion[0].startswith("Leakage inflates the score"), diag.conclusion
    assert any("overfits" in s for s in diag.conclusion), diag.conclusion
    # Grouped splits drive the sweep and the curve once near-duplicates exist.
    assert "group" in diag.numbers["splits"]
    assert len(diag.numbers["regularisation"]["settings"]) == 5
    for png in files.plots.values():
        assert png.read_bytes()[:8] == PNG_MAGIC
    page = files.html.read_text()
    assert page.count('src="data:image/png;base64,') == len(files.plots) == 4
    assert not re.search(r'(src|href)="(?!data:)', page), "the report must load nothing external"
    assert "Leakage inflates the score" in page.split("<h2>")[0]  # conclusion on top
    saved = json.loads((tmp_path / "diagnosis.json").read_text())
    assert saved["conclusion"] == diag.conclusion


def test_clean_data_reports_no_leakage():
    diag = diagnose(clean(), "logreg", grid=[0.01, 0.1, 1])
    assert diag.numbers["leakage"]["n_near_duplicate_groups"] == 0
    assert diag.random_sweep is None
    assert diag.conclusion[0].startswith("No near-duplicate leakage found"), diag.conclusion
    assert "stratified 5-fold" in diag.numbers["splits"]
    recalls = [r["recall"] for r in diag.numbers["per_class"]["classes"]]
    assert min(recalls) > 0.8


def test_render_html_escapes_text_and_embeds_images(tmp_path):
    png = tmp_path / "p.png"
    from matplotlib.figure import Figure
    Figure(figsize=(1, 1)).savefig(png)
    page = render_html("T <1>", ["a & b"], [Section("S", ["n"], [(["h"], [[0.5], ["<x>"]])], [png])])
    assert "T &lt;1&gt;" in page and "a &amp; b" in page and "&lt;x&gt;" in page
    assert "data:image/png;base64," in page


def test_diagnose_cli(tmp_path):
    from featcache.cache import save_features
    from featcache.cli import cli
    feats, _ = planted(n_clips=30, n_single=30, seed=4)
    cache = tmp_path / "c.h5"
    save_features(cache, feats)
    out = tmp_path / "diag"
    res = CliRunner().invoke(cli, ["diagnose", str(cache), "--head", "logreg", "--out", str(out),
                                   "--grid", "0.01,1"])
    assert res.exit_code == 0, res.output
    assert "Leakage inflates the score" in res.output
    assert (out / "report.html").is_file() and (out / "leakage.png").is_file()
    bad = CliRunner().invoke(cli, ["diagnose", str(cache), "--grid", "a,b", "--out", str(out)])
    assert bad.exit_code != 0 and "--grid" in bad.output


def test_degenerate_grouping_falls_back_to_random_splits_and_says_so():
    """Random-weight features are all alike: one 'group' must not break the report."""
    feats = clean(n=120, d=32)
    common = 1e3 * np.ones(feats.X.shape[1], np.float32)  # every cosine similarity > 0.999
    feats = Features(feats.X + common, feats.y, feats.paths, feats.class_names, feats.sha256)
    diag = diagnose(feats, "logreg", grid=[0.01, 1])
    assert "near-duplicate group" in diag.numbers["leakage"]["grouping_unusable"]
    assert diag.conclusion[0].startswith("Could not test for leakage with grouped splits")
    assert "group" not in diag.numbers["splits"]
