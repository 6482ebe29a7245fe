"""Exceptions that mean "the user asked for something that cannot work".

The CLI prints these as one line and exits non-zero, with no traceback.
Anything else is a bug and keeps its traceback.
"""


class FeatcacheError(Exception):
    """A user-facing error whose message says what to do."""


class NoSpaceError(FeatcacheError, OSError):
    """The disk (or quota, or file-size limit) is full; what was committed is kept."""


class InvalidParameterError(FeatcacheError, ValueError):
    """A constructor parameter of a featcache estimator has a value it cannot take.

    Raised from ``fit`` (as scikit-learn does), with a message naming the
    parameter, the estimator, the accepted values and the value given. Also a
    ``ValueError``, so scikit-learn's tools treat it as a parameter error.
    """
