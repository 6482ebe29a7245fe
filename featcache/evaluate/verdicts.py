"""Every threshold and rule behind featcache's plain-language verdicts.

``curve`` (:meth:`CurveResult.advice`), ``audit`` (:func:`findings`),
``cv --group-by near-duplicates`` and ``diagnose`` all speak through the
functions below, so the same numbers always get the same words. All scores
and gaps are in the metric the user chose (``--metric``): the train score is
computed in that metric too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAIN_RISING = 0.01
"""Validation gain per doubling of the training data at or above which more data helps."""
GAP_MODERATE = 0.05
"""Train minus validation score above which a head overfits (regularise more)."""
GAP_LARGE = 0.10
"""Train minus validation score above which the overfitting is large."""
GAP_NARROWS = 0.02
"""How much stronger regularisation must narrow the gap to count as narrowing it."""
LEAK_MARGIN = 0.02
"""Random minus grouped validation score that counts as leakage."""
GROUP_TOO_LARGE = 0.5
"""Fraction of the images in one near-duplicate group that means the threshold is too low."""
GROUP_TOO_LARGE_MIN_IMAGES = 10
"""Fewer images than this never count as one oversized group."""
LEAKY_VAL_FRACTION = 0.05
"""Fraction of validation images with a near-duplicate in training that makes a score optimistic."""
WEAK_CLASS_MARGIN = 0.10
"""Recall this far below the mean recall makes a class the one where errors concentrate."""
IMBALANCE_RATIO = 1.5
"""Largest over smallest class count from which accuracy alone misleads."""
VIEWS_MARGIN = 0.005
"""Validation change from training on augmented views that counts (with ``VIEWS_P``) as real."""
VIEWS_P = 0.05
"""Corrected t-test p-value below which the with/without views difference is significant."""


@dataclass(frozen=True)
class Verdict:
    """A rule's outcome: a stable ``kind`` (for code and tests) and the sentence users read."""

    kind: str
    sentence: str


def gap_level(gap: float) -> str:
    """``"large"``, ``"moderate"`` or ``"small"`` train-validation gap."""
    if gap > GAP_LARGE:
        return "large"
    return "moderate" if gap > GAP_MODERATE else "small"


def learning_curve_verdict(gain: float, gap: float, metric: str = "accuracy",
                           grouped: bool = False) -> Verdict:
    """Would more data help, or more regularisation, or neither?

    Parameters
    ----------
    gain : float
        Validation score change per doubling of the training data (curve tail).
    gap : float
        Train minus validation score at the largest training size, in ``metric``.
    metric : str
    grouped : bool
        The curve used grouped splits: "more data" then means new groups (clips).

    Returns
    -------
    Verdict with kind ``"unknown"``, ``"more_data"``, ``"regularise"`` or ``"capacity"``.
    """
    if not np.isfinite(gain):
        return Verdict("unknown", "The learning curve has too few points to tell whether more "
                                  "data would help.")
    if gain >= GAIN_RISING:
        more = ("more independent images (new clips, not more frames of the same clips)"
                if grouped else "more images")
        also = (f" Train is {gap:.3f} higher, so stronger regularisation may help too."
                if gap > GAP_MODERATE else "")
        return Verdict("more_data", f"Validation {metric} still rises by {gain:+.3f} per "
                                    f"doubling of the training data: collect {more}.{also}")
    if gap > GAP_MODERATE:
        return Verdict("regularise", f"Validation {metric} has levelled off ({gain:+.3f} per "
                                     f"doubling) while train is {gap:.3f} higher: regularise "
                                     "more rather than add data.")
    return Verdict("capacity", f"Validation {metric} has levelled off ({gain:+.3f} per doubling) "
                               f"and train is close ({gap:+.3f}): the head is at capacity; try "
                               "better features (another backbone) or more varied data.")


def oversized_group(largest: int, n_images: int) -> bool:
    """Whether one near-duplicate group is so large the threshold must be too low."""
    return n_images >= GROUP_TOO_LARGE_MIN_IMAGES and largest > GROUP_TOO_LARGE * n_images


def unusable_grouping(groups, folds: int) -> str | None:
    """Why near-duplicate ``groups`` cannot drive grouped CV, or None when they can."""
    if groups is None:
        return None
    ids, sizes = np.unique(groups, return_counts=True)
    if oversized_group(int(sizes.max()), len(groups)):
        return (f"one near-duplicate group holds {sizes.max()} of {len(groups)} images, so the "
                "threshold is too low for these features (pass --threshold)")
    if len(ids) < folds:
        return f"only {len(ids)} near-duplicate groups, too few for {folds} grouped folds"
    return None


def near_duplicate_findings(summary: dict, nd: dict) -> list:
    """The audit's sentences about near-duplicate groups and their threshold."""
    out = [f"{summary['n_images_in_near_duplicate_groups']} of {summary['n_images']} images fall "
           f"in {summary['n_near_duplicate_groups']} near-duplicate groups (cosine >= "
           f"{nd['threshold']:.4g}, {nd['threshold_source']} threshold: {nd['reason']})."]
    if oversized_group(nd["largest_group"], summary["n_images"]):
        out.append(f"One group holds {nd['largest_group']} images, over "
                   f"{GROUP_TOO_LARGE:.0%} of the data: the threshold is probably too low for "
                   "these features; pass --threshold.")
    return out


def cv_leak_finding(cv: dict, unusable: str | None = None) -> str:
    """The audit's sentence on featcache's own random CV folds.

    ``unusable`` is :func:`unusable_grouping` of the groups: grouped CV is
    advised only when it can run (diagnose falls back on the same rule).
    """
    frac = cv["mean_val_fraction_with_train_duplicate"]
    advice = ""
    if frac > 0:
        advice = (f" Grouped CV cannot fix it here: {unusable}." if unusable else
                  " Use --group-by near-duplicates in cv, sweep and curve.")
    return (f"featcache CV ({cv['description']}): on average {frac:.0%} of each validation fold "
            f"has a near-duplicate in training; {cv['groups_straddling_any_fold']} groups "
            f"straddle folds.{advice}")


def imbalance_finding(balance: dict) -> str | None:
    """A sentence when classes are imbalanced enough for accuracy to mislead."""
    if balance["imbalance_ratio"] < IMBALANCE_RATIO:
        return None
    return (f"Classes are imbalanced: the largest is {balance['imbalance_ratio']:.1f}x the "
            f"smallest ({balance['smallest_class']!r}); read balanced accuracy, not accuracy.")


def split_verdict(best: str, metric: str, random_mean: float, grouped_mean: float,
                  straddling: int, what: str = "near-duplicate groups") -> Verdict:
    """Which of random and grouped CV to believe; kind ``"grouped"`` or ``"random"``."""
    r, g = random_mean, grouped_mean
    if not straddling:
        return Verdict("random", f"No group straddles the random splits, so both scores are "
                                 f"honest ({metric} {r:.3f} random, {g:.3f} grouped).")
    effect = (f"so the random score is inflated by {r - g:.3f}" if r > g else
              "so the random score validates on near-copies of training rows, even though it "
              "is not higher here")
    return Verdict("grouped", f"Believe the grouped score ({best}: {metric} {g:.3f}, not "
                              f"{r:.3f}): random splits put {straddling} {what} on both sides "
                              f"of a split, {effect}.")


def leakage_sentences(leak: dict, metric: str) -> list:
    """diagnose's sentences on label conflicts, near-duplicate leakage and Keras splits."""
    out = []
    if leak["n_label_conflicts"]:
        out.append(f"{leak['n_label_conflicts']} image(s) sit in two class folders at once "
                   "(label conflicts): fix them first.")
    if leak.get("grouping_unusable"):
        out.append(f"Could not test for leakage with grouped splits: {leak['grouping_unusable']}. "
                   "The numbers below use random splits and may be optimistic.")
    elif "inflation" in leak and leak["inflation"] >= LEAK_MARGIN:
        out.append(f"Leakage inflates the score: {metric} is {leak['random_mean']:.3f} with random "
                   f"splits but {leak['grouped_mean']:.3f} when near-duplicate images stay on one "
                   f"side of the split ({leak['inflation']:+.3f}). Part of what looks like "
                   "learning is recognising frames already seen in training; believe the "
                   "grouped number.")
    elif leak["n_near_duplicate_groups"]:
        alike = (f" ({leak['random_mean']:.3f} vs {leak['grouped_mean']:.3f})"
                 if "random_mean" in leak else "")
        out.append(f"{leak['n_near_duplicate_groups']} near-duplicate groups exist, but random "
                   f"and grouped splits score alike{alike}: leakage is not what hurts here.")
    else:
        out.append("No near-duplicate leakage found: no images are near-copies of each other "
                   f"(threshold {leak['threshold']:.4g}, {leak['threshold_source']}).")
    frac = leak["keras_flow_val_fraction_with_train_duplicate"]
    tail = (f"; {frac:.0%} of them have a near-duplicate in training, so its score is "
            "optimistic too" if frac > LEAKY_VAL_FRACTION and not leak.get("grouping_unusable")
            else "")
    out.append("A Keras ImageDataGenerator validation_split validates on the first files of "
               f"each class in name order, not on a random sample{tail}.")
    return out


def regularisation_sentences(reg: dict, metric: str) -> list:
    """diagnose's sentences on the train-validation gap across the sweep (weakest first)."""
    best, p = reg["best"], reg["param"]
    weak, strong = reg["settings"][0], reg["settings"][-1]
    at = f"at the best {p}={best['value']:.3g}"
    level = gap_level(best["gap"])
    if level == "large":
        out = [f"The head overfits: train {metric} {best['train']:.3f} vs validation "
               f"{best['val']:.3f} {at} (gap {best['gap']:.3f})."]
        if strong["gap"] < best["gap"] - GAP_NARROWS and strong["val"] < best["val"]:
            out.append(f"Stronger regularisation narrows the gap (to {strong['gap']:.3f} at "
                       f"{p}={strong['value']:.3g}) but lowers validation {metric} to "
                       f"{strong['val']:.3f}: regularisation alone cannot close it.")
        elif gap_level(strong["gap"]) == "large" and strong is not best:
            out.append(f"Even the strongest regularisation tried ({p}={strong['value']:.3g}) "
                       f"leaves a gap of {strong['gap']:.3f}: regularisation is not the fix.")
    elif level == "moderate":
        out = [f"Moderate train-validation gap: {best['gap']:.3f} in {metric} {at}."]
    else:
        out = [f"Little overfitting: train and validation {metric} agree within "
               f"{best['gap']:.3f} {at}."]
    if reg["best_at_edge"] == "strongest":
        out.append(f"Validation peaks at the strongest regularisation tried ({p}="
                   f"{best['value']:.3g}): extend the grid towards stronger values.")
    elif reg["best_at_edge"] == "weakest" and gap_level(weak["gap"]) == "large":
        out.append("Validation peaks at the weakest regularisation: the gap comes from the data "
                   "or features, not from too little regularisation.")
    return out


def weak_class_sentence(per_class: dict) -> str | None:
    """A sentence when errors concentrate in one class."""
    worst = next(r for r in per_class["classes"] if r["class"] == per_class["worst"])
    if worst["recall"] >= per_class["mean_recall"] - WEAK_CLASS_MARGIN:
        return None
    return (f"Errors concentrate in class {worst['class']!r}: recall {worst['recall']:.3f} vs "
            f"{per_class['mean_recall']:.3f} on average, mostly predicted as "
            f"{worst['confused_with']!r}.")


def diagnosis_conclusion(numbers: dict) -> list:
    """diagnose's conclusion, most important first, from its ``numbers`` dict."""
    metric, leak, cur = numbers["metric"], numbers["leakage"], numbers["learning_curve"]
    out = leakage_sentences(leak, metric)
    out += regularisation_sentences(numbers["regularisation"], metric)
    if "augmentation" in numbers:
        out.append(augmentation_verdict(numbers["augmentation"], metric).sentence)
    out.append(learning_curve_verdict(cur["gain_per_doubling"], cur["final_gap"], metric,
                                      grouped=cur["grouped"]).sentence)
    out += [s for s in (weak_class_sentence(numbers["per_class"]),
                        imbalance_finding(numbers["class_balance"])) if s]
    return out


def augmentation_verdict(test: dict, metric: str = "accuracy") -> Verdict:
    """Does training on augmented views close the train-validation gap?

    Parameters
    ----------
    test : dict
        :func:`featcache.evaluate.views.views_test`: ``without`` and
        ``with`` (``mean``, ``gap`` at each run's best setting; the gap is on
        clean training rows) and the corrected ``p_value`` of with minus without.
    metric : str

    Returns
    -------
    Verdict with kind ``"closes"`` (the gap was above ``GAP_MODERATE`` and
    is no longer, validation not lower by ``VIEWS_MARGIN``), ``"narrows"``
    (gap down by ``GAP_NARROWS`` or more, validation not lower), ``"helps"`` /
    ``"hurts"`` (validation up / down by ``VIEWS_MARGIN`` or more with
    p < ``VIEWS_P``), else ``"no_effect"``.
    """
    a, b, p = test["without"], test["with"], test["p_value"]
    d = b["mean"] - a["mean"]
    sig = bool(np.isfinite(p) and p < VIEWS_P)
    nums = (f"validation {metric} {a['mean']:.3f} -> {b['mean']:.3f} ({d:+.3f}, p = {p:.3g}), "
            f"train-validation gap {a['gap']:.3f} -> {b['gap']:.3f}")
    if a["gap"] > GAP_MODERATE >= b["gap"] and d > -VIEWS_MARGIN:
        return Verdict("closes", f"Training on augmented views closes the gap: {nums}.")
    if a["gap"] - b["gap"] >= GAP_NARROWS and d > -VIEWS_MARGIN:
        return Verdict("narrows", f"Augmented views narrow the gap but do not close it: {nums}.")
    if d >= VIEWS_MARGIN and sig:
        return Verdict("helps", f"Augmented views raise validation {metric} without closing "
                                f"the gap: {nums}.")
    if d <= -VIEWS_MARGIN and sig:
        return Verdict("hurts", f"Augmented views lower validation {metric}: {nums}; the "
                                "augmentation may be too strong for these classes (try a "
                                "milder --augment).")
    return Verdict("no_effect", f"Augmented views make no clear difference: {nums}.")
