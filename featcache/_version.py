"""The version, in one place: pyproject.toml and the cache files read it from here."""

__version__ = "0.1.0"
