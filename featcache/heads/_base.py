"""Shared pieces of every head: the regularisation-path contract, parameter and
input checks, class weights and the linear decision helpers.

Kept free of TensorFlow: only :mod:`featcache.heads.softmax` imports it, lazily.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from sklearn.utils._param_validation import (Interval, StrOptions,
                                            validate_parameter_constraints)

from featcache.errors import FeatcacheError, InvalidParameterError

__all__ = ["BaseHead", "HeadInputError", "Interval", "StrOptions", "CLASS_WEIGHT",
           "prepare_fit", "row_weights", "LinearDecisionMixin"]

#: ``class_weight`` accepts what scikit-learn's classifiers accept.
CLASS_WEIGHT = [StrOptions({"balanced"}), dict, None]


class BaseHead(ClassifierMixin, BaseEstimator):
    """Base class of featcache heads, defining the regularisation-path contract.

    Class attributes every head declares
    ------------------------------------
    reg_param : str
        Name of the constructor parameter that sets regularisation strength
        (``"C"`` for LogisticHead and LinearSVMHead, ``"l2"`` for SoftmaxHead).
    default_grid : ndarray of 10 floats
        A sensible log grid for ``reg_param`` on standardised features, in
        increasing order of the parameter value.
    stronger_when_larger : bool
        True when a larger ``reg_param`` value means *more* regularisation
        (``l2``), False when it means less (``C``).

    fit_path contract
    -----------------
    ``head.fit_path(X, y, values) -> list[estimator]``

    * Returns one fitted estimator per entry of ``values``, **in the order
      given** (duplicates allowed, each gets its own estimator).
    * Each returned estimator is equivalent, to solver tolerance, to
      ``clone(head).set_params(**{head.reg_param: v}).fit(X, y)``: it is a
      fresh instance of the same class whose ``get_params()`` equals the
      head's except ``reg_param == v``, and it supports ``predict``,
      ``predict_proba``/``decision_function`` like a normally fitted head.
    * ``head`` itself is not modified (it need not be fitted).
    * Faster than refitting: the scaler is fitted once, the values are
      visited from strongest to weakest regularisation and each fit is
      warm-started from the previous solution.
    * ``values`` must be a non-empty 1-d sequence of positive finite numbers,
      otherwise FeatcacheError is raised.

    Use it per CV fold: ``models = head.fit_path(X[tr], y[tr], grid)`` and then
    score ``models[i]`` on ``X[te]``.
    """

    reg_param: str = "C"
    default_grid: np.ndarray = np.logspace(-4, 1, 10)
    stronger_when_larger: bool = False
    #: parameter name -> list of accepted constraints, as scikit-learn's
    #: ``_parameter_constraints`` (checked by :meth:`_check_params` in ``fit``)
    _parameter_constraints: dict = {}

    def _check_params(self):
        """Raise InvalidParameterError unless every parameter meets its constraint."""
        from sklearn.utils._param_validation import \
            InvalidParameterError as SklearnParamError
        try:
            validate_parameter_constraints(self._parameter_constraints,
                                           self.get_params(deep=False),
                                           caller_name=type(self).__name__)
        except SklearnParamError as exc:
            raise InvalidParameterError(f"{exc} Pass a valid value to the "
                                        f"constructor or set_params.") from None

    def fit_path(self, X, y, values):
        """Fit one estimator per regularisation value (see class docstring).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        values : sequence of float
            Values of ``self.reg_param``.

        Returns
        -------
        list of fitted estimators, aligned with ``values``.
        """
        values = check_path_values(values, self.reg_param)
        order = path_order(values, self.stronger_when_larger)
        fitted = self._fit_path_sorted(X, y, values[order])
        out = [None] * len(values)
        for pos, est in zip(order, fitted):
            out[pos] = est
        return out

    def _fit_path_sorted(self, X, y, values):
        """Fallback: independent refits, strongest regularisation first."""
        return [clone(self).set_params(**{self.reg_param: v}).fit(X, y)
                for v in values]

    def _with_value(self, value):
        """Unfitted clone of this head with ``reg_param`` set to ``value``."""
        return clone(self).set_params(**{self.reg_param: float(value)})


def check_path_values(values, name):
    """``values`` as a 1-d float array, or FeatcacheError naming ``name``."""
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        raise FeatcacheError(f"fit_path values for {name!r} must be numbers, "
                             f"got {values!r}") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise FeatcacheError(f"fit_path values for {name!r} must be a non-empty "
                             f"list of positive finite numbers, got {values!r}")
    return arr


def path_order(values, stronger_when_larger):
    """Indices visiting ``values`` from strongest to weakest regularisation."""
    order = np.argsort(values, kind="stable")
    return order[::-1] if stronger_when_larger else order


class HeadInputError(FeatcacheError, ValueError):
    """Bad training data for a head (also a ValueError, as sklearn expects)."""


def prepare_fit(est, X, y, standardize):
    """Validate ``X, y`` for ``fit``; return (Xs float32, y_encoded, scaler).

    Sets ``classes_`` and ``n_features_in_`` on ``est``. The scaler is fitted
    here, on the training rows only, so a CV fold never sees its test rows.
    """
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import validate_data

    X, y = validate_data(est, X, y, dtype=[np.float32, np.float64])
    check_classification_targets(y)
    est.classes_, y_enc = np.unique(y, return_inverse=True)
    if len(est.classes_) < 2:
        raise HeadInputError(f"{type(est).__name__} needs at least 2 classes to "
                             f"train, got 1 class: {est.classes_[0]!r}")
    X = np.asarray(X, dtype=np.float32)
    scaler = None
    if standardize:
        scaler = StandardScaler().fit(X)
        X = scaler.transform(X).astype(np.float32, copy=False)
    return np.ascontiguousarray(X), y_enc, scaler


def row_weights(est, y_enc):
    """Per-row weights for ``est.class_weight`` (None when unweighted).

    ``"balanced"`` gives class ``c`` the weight ``n / (n_classes * n_c)``,
    computed on the rows being fitted, as scikit-learn does; a dict maps
    class labels to weights (missing classes weigh 1).
    """
    if est.class_weight is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight
    try:
        per_class = compute_class_weight(est.class_weight, classes=est.classes_,
                                         y=est.classes_[y_enc])
    except ValueError as exc:
        raise InvalidParameterError(f"class_weight of {type(est).__name__}: "
                                    f"{exc}") from None
    return per_class.astype(np.float32)[y_enc]


class LinearDecisionMixin:
    """``decision_function``/``predict`` from raw-space ``coef_``/``intercept_``.

    ``coef_`` has shape (1, d) for two classes and (k, d) otherwise, as in
    scikit-learn's linear models, and already includes the standardisation.
    """

    def fit(self, X, y):
        """Fit on ``X`` (n_samples, n_features) and labels ``y``; return self."""
        self._fit_path_sorted(X, y, [getattr(self, self.reg_param)], targets=[self])
        return self

    def _start_path(self, X, y, values, targets):
        """Check parameters, standardise once, and name one estimator per value."""
        self._check_params()
        Xs, y_enc, scaler = prepare_fit(self, X, y, self.standardize)
        if targets is None:
            targets = [self._with_value(v) for v in values]
        return Xs, y_enc, scaler, targets

    def _store_fit(self, est, W, b, n_iter, scaler):
        """Give ``est`` what this fit learned, with coefficients in raw feature units."""
        from featcache.heads._linear import fold_scaler
        est.classes_ = self.classes_
        est.n_features_in_ = self.n_features_in_
        if hasattr(self, "feature_names_in_"):
            est.feature_names_in_ = self.feature_names_in_
        est.scaler_ = scaler
        Wr, br = fold_scaler(W, b, scaler)
        est.coef_, est.intercept_ = Wr.T.copy(), np.asarray(br)
        est.n_iter_ = max(1, n_iter)

    def decision_function(self, X):
        """Class scores, shape (n,) for two classes, else (n, n_classes)."""
        from sklearn.utils.validation import check_is_fitted, validate_data
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        scores = X @ self.coef_.T.astype(X.dtype) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predicted class labels."""
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)
        return self.classes_[idx]
