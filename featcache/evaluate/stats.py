"""Statistics over cross-validation folds: summaries, intervals, paired tests.

Fold scores share most of their training data, so they are positively
correlated and the naive variance of their mean is too small. Nadeau & Bengio
(2003, "Inference for the generalization error", Machine Learning 52) correct
it by inflating ``1/J`` to ``1/J + n_test/n_train``. featcache uses that
correction for both the 95% interval and the paired test between heads.
"""
from __future__ import annotations

import numpy as np
from scipy import stats as _st


def _corrected_se(values, n_train=None, n_test=None):
    """Standard error of the mean of ``values``, Nadeau-Bengio corrected when sizes given."""
    values = np.asarray(values, dtype=float)
    J = len(values)
    if J < 2:
        return np.nan
    factor = 1.0 / J + (n_test / n_train if n_train and n_test else 0.0)
    return float(np.sqrt(factor * np.var(values, ddof=1)))


def summarize(values, n_train=None, n_test=None, confidence: float = 0.95,
              bounds=None) -> dict:
    """Mean, spread and a confidence interval of per-fold scores.

    Parameters
    ----------
    values : sequence of float
        One score per fold (NaN entries are ignored).
    n_train, n_test : float, optional
        Mean training and validation fold sizes. When given, the interval uses
        the Nadeau-Bengio corrected variance ``(1/J + n_test/n_train) s^2``;
        otherwise the plain t-interval ``s^2 / J``.
    confidence : float, default 0.95
    bounds : (low, high), optional
        Range of the metric (``(0, 1)`` for accuracy); the interval is clipped to it.

    Returns
    -------
    dict with ``mean``, ``std`` (sample std across folds, ddof=1), ``ci_low``,
    ``ci_high``, ``n`` (number of folds used). ``std`` and the interval are NaN
    with fewer than two folds.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    se = _corrected_se(v, n_train, n_test)
    half = float(_st.t.ppf(0.5 + confidence / 2, v.size - 1) * se) if v.size > 1 else np.nan
    low, high = mean - half, mean + half
    if bounds is not None and v.size > 1:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "n": int(v.size)}


def corrected_ttest(a, b, n_train, n_test) -> dict:
    """Nadeau-Bengio corrected resampled t-test on paired fold scores.

    Parameters
    ----------
    a, b : sequence of float
        Scores of two models on the *same* splits, fold by fold.
    n_train, n_test : float
        Training and validation fold sizes (means if they vary).

    Returns
    -------
    dict with ``mean_diff`` (mean of ``a - b``), ``t``, ``df`` (``J - 1``) and
    the two-sided ``p_value``. With identical differences in every fold the
    variance is zero: ``p_value`` is 1 when the mean difference is 0, else 0.

    Notes
    -----
    ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d, ddof=1))`` with
    ``d = a - b`` over the ``J`` splits.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError("corrected_ttest needs at least two paired fold scores")
    mean = float(d.mean())
    se = _corrected_se(d, n_train, n_test)
    df = len(d) - 1
    if se == 0 or not np.isfinite(se):
        t = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
        p = 1.0 if mean == 0 else 0.0
    else:
        t = mean / se
        p = float(2 * _st.t.sf(abs(t), df))
    return {"mean_diff": mean, "t": float(t), "df": int(df), "p_value": p}


def compare_to_best(fold_scores: dict, n_train, n_test, higher_is_better: bool = True) -> dict:
    """Paired comparison of the best model against each of the others.

    Parameters
    ----------
    fold_scores : dict name -> sequence of float
        Per-split scores of each model, all on the same splits.
    n_train, n_test : float
        Fold sizes for the Nadeau-Bengio correction.
    higher_is_better : bool, default True

    Returns
    -------
    dict with ``best`` (name with the best mean score) and ``tests``: a list of
    dicts (``other``, ``mean_diff`` = best minus other, ``t``, ``df``,
    ``p_value``), one per other model. ``tests`` is empty for one model or
    fewer than two splits.
    """
    names = list(fold_scores)
    means = {k: np.nanmean(np.asarray(v, dtype=float)) for k, v in fold_scores.items()}
    sign = 1 if higher_is_better else -1
    best = max(names, key=lambda k: sign * means[k])
    tests = []
    for other in names:
        if other == best or len(fold_scores[best]) < 2:
            continue
        res = corrected_ttest(fold_scores[best], fold_scores[other], n_train, n_test)
        tests.append({"other": other, **res})
    return {"best": best, "tests": tests}
