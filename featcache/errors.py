"""Exceptions that mean "the user asked for something that cannot work".

The CLI prints these as one line and exits non-zero, with no traceback.
Anything else is a bug and keeps its traceback.
"""


class FeatcacheError(Exception):
    """A user-facing error whose message says what to do."""
