"""Classifier heads on cached features, scikit-learn compatible.

``HEADS`` maps a short name to a head class; :func:`get_head` builds one.
Every head standardises its features inside ``fit`` (training rows only),
declares ``reg_param`` / ``default_grid`` / ``stronger_when_larger`` and
implements the fast ``fit_path`` contract documented on
:class:`BaseHead` (read that docstring before sweeping). Bad parameter
values raise :class:`~featcache.errors.InvalidParameterError` from ``fit``,
checked against each head's constraint table ``_parameter_constraints``.

TensorFlow is imported lazily, only when a ``SoftmaxHead`` is fitted.
"""
from __future__ import annotations

from featcache.errors import FeatcacheError, InvalidParameterError
from featcache.heads._base import BaseHead, HeadInputError
from featcache.heads.logistic import LogisticHead
from featcache.heads.softmax import SoftmaxHead
from featcache.heads.svm import LinearSVMHead

HEADS = {
    "logreg": LogisticHead,
    "svm": LinearSVMHead,
    "softmax": SoftmaxHead,
}

__all__ = ["HEADS", "get_head", "LogisticHead", "LinearSVMHead", "SoftmaxHead",
           "BaseHead", "HeadInputError"]


def get_head(name, **params):
    """Build the head registered as ``name`` with constructor ``params``.

    Parameters
    ----------
    name : str
        One of ``HEADS`` (``"logreg"``, ``"svm"``, ``"softmax"``).
    **params
        Passed to the head's constructor, e.g. ``C=0.1``.

    Returns
    -------
    An unfitted head.

    Raises
    ------
    FeatcacheError
        If ``name`` is unknown or a parameter is not accepted by that head.
    """
    if name not in HEADS:
        raise FeatcacheError(f"unknown head {name!r}; valid heads: "
                             f"{', '.join(sorted(HEADS))}")
    cls = HEADS[name]
    valid = cls._get_param_names()
    bad = sorted(set(params) - set(valid))
    if bad:
        raise InvalidParameterError(f"head {name!r} has no parameter(s) {', '.join(bad)}; "
                             f"valid parameters: {', '.join(valid)}")
    return cls(**params)
