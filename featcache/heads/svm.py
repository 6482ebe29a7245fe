"""Linear SVM (one-vs-rest, squared hinge) on standardised features."""
from __future__ import annotations

from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.utils.metaestimators import available_if

from featcache.heads._base import (CLASS_WEIGHT, BaseHead, HeadInputError, Interval,
                                   LinearDecisionMixin, row_weights)
from featcache.heads._linear import linear_path, squared_hinge_loss_grad
from featcache.threads import blas_thread_limit


def _has_proba(est):
    return bool(est.probability)


class LinearSVMHead(LinearDecisionMixin, BaseHead):
    """One-vs-rest linear SVM head with optional calibrated probabilities.

    Solves the primal of scikit-learn's ``LinearSVC(loss="squared_hinge",
    dual=False)`` for all classes at once with float32 L-BFGS (the primal
    suits n_samples > n_features, and its cost does not blow up with C as
    liblinear's dual does). Unlike liblinear, the intercept is not penalised.
    ``C`` means the same as in ``LinearSVC``.

    Parameters
    ----------
    C : float, default=0.01
        Inverse regularisation strength. On standardised features with
        hundreds of dimensions, small values (1e-6..1) are the useful range.
    probability : bool, default=False
        Add ``predict_proba``, calibrated by a multinomial logistic model fitted
        on out-of-fold SVM scores from ``calibration_folds`` inner folds (like
        ``CalibratedClassifierCV(ensemble=False)``). ``decision_function`` then
        returns the calibrated logits, so it agrees with ``predict_proba``.
    calibration_folds : int, default=3
    tol : float, default=1e-3
        Gradient tolerance, as for :class:`LogisticHead`.
    max_iter : int, default=1000
    standardize : bool, default=True
    random_state : int, default=0
        Seeds the inner calibration split.
    blas_threads : int or None, default=1
    class_weight : None, "balanced" or dict, default=None
        Weight of each class's rows in the loss of every one-vs-rest problem
        (and in the calibrator); ``"balanced"`` as in :class:`LogisticHead`.

    Attributes
    ----------
    classes_, n_features_in_, coef_, intercept_ (raw feature units),
    scaler_, n_iter_, calibrator_ (LogisticRegression or None).
    """

    reg_param = "C"
    default_grid = np.logspace(-6, 0, 10)  # peak inside on 5,000 x 1,280 features
    stronger_when_larger = False
    _parameter_constraints = {
        "C": [Interval(Real, 0, None, closed="neither")],
        "probability": ["boolean"],
        "calibration_folds": [Interval(Integral, 2, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "random_state": ["random_state"],
        "blas_threads": [Interval(Integral, 1, None, closed="left"), None],
        "class_weight": CLASS_WEIGHT,
    }

    def __init__(self, C=0.01, probability=False, calibration_folds=3, tol=1e-3,
                 max_iter=1000, standardize=True, random_state=0, blas_threads=1,
                 class_weight=None):
        self.C = C
        self.probability = probability
        self.calibration_folds = calibration_folds
        self.tol = tol
        self.max_iter = max_iter
        self.standardize = standardize
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.class_weight = class_weight

    def decision_function(self, X):
        """SVM margins, or calibrated logits when ``probability=True``."""
        scores = super().decision_function(X)
        if self.calibrator_ is None:
            return scores
        return self.calibrator_.decision_function(_as_2d(scores))

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Calibrated class probabilities (only with ``probability=True``)."""
        margins = LinearDecisionMixin.decision_function(self, X)
        return self.calibrator_.predict_proba(_as_2d(margins))

    def _fit_path_sorted(self, X, y, values, targets=None):
        with blas_thread_limit(self.blas_threads):
            Xs, y_enc, scaler, targets = self._start_path(X, y, values, targets)
            sw = row_weights(self, y_enc)
            calibrators = [None] * len(values)
            if self.probability:
                calibrators = self._calibrators(Xs, y_enc, values, sw)
            fits = _svm_path(Xs, y_enc, len(self.classes_), values, self, sw)
            for est, (W, b, n_iter), cal in zip(targets, fits, calibrators):
                self._store_fit(est, W, b, n_iter, scaler)
                est.calibrator_ = cal
        return targets

    def _calibrators(self, Xs, y_enc, values, sw):
        """One calibrator per value, fitted on out-of-fold margins."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold
        k = len(self.classes_)
        n_min = np.bincount(y_enc).min()
        folds = max(2, min(int(self.calibration_folds), n_min))
        if n_min < 2:
            raise HeadInputError("probability=True needs at least 2 samples "
                                 "per class for calibration")
        cv = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        oof = np.zeros((len(values), len(y_enc), 1 if k == 2 else k))
        for tr, te in cv.split(Xs, y_enc):
            fold_sw = None if sw is None else sw[tr]
            for i, (W, b, _) in enumerate(_svm_path(Xs[tr], y_enc[tr], k,
                                                    values, self, fold_sw)):
                oof[i][te] = Xs[te] @ W.astype(np.float32) + b
        return [LogisticRegression().fit(scores, self.classes_[y_enc], sample_weight=sw)
                for scores in oof]


def _as_2d(scores):
    return scores[:, None] if scores.ndim == 1 else scores


def _svm_path(Xs, y_enc, k, values, head, sw):
    """Yield (W, b, n_iter) for each C in ``values``, warm-starting."""
    if k == 2:
        Y = np.where(y_enc == 1, 1, -1).astype(np.float32)[:, None]
    else:
        Y = np.where(np.eye(k, dtype=bool)[y_enc], 1, -1).astype(np.float32)
    w0 = np.zeros((Xs.shape[1] + 1, Y.shape[1]))
    w0[-1] = Y.mean(axis=0)  # intercept near the class balance
    # squared hinge: second derivative 2 on active rows, about half of them
    yield from linear_path(Xs, Y, values, partial(squared_hinge_loss_grad, sw=sw),
                           w0, head.tol, head.max_iter, curvature=1.0)
