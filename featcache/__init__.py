"""featcache: embed images once, train and cross-validate heads in seconds.

The public API is re-exported here lazily, so that importing featcache for
heads or evaluation does not pay TensorFlow's start-up cost.
"""
from importlib import import_module

from featcache._version import __version__  # noqa: F401  (the public version)

_EXPORTS = {
    "FeatcacheError": "featcache.errors",
    "InvalidParameterError": "featcache.errors",
    "Features": "featcache.cache.features",
    "embed": "featcache.embedding.run",
    "load_features": "featcache.cache",
    "load_views": "featcache.cache.load",
    "Views": "featcache.cache.views",
    "open_features": "featcache.evaluate.streaming",
    "cache_info": "featcache.cache",
    "get_backbone": "featcache.embedding.backbones",
    "list_backbones": "featcache.embedding.registry",
    "compare_backbones": "featcache.evaluate.compare",
    "scan_folder": "featcache.embedding.scan",
    "save_features": "featcache.cache",
    "merge": "featcache.cache",
    "embed_on_ray": "featcache.cluster.ray_embed",
    "get_head": "featcache.heads",
    "cross_validate_heads": "featcache.evaluate",
    "sweep": "featcache.evaluate",
    "nested_cv": "featcache.evaluate",
    "learning_curve": "featcache.evaluate",
    "compare_random_grouped": "featcache.evaluate",
    "make_splits": "featcache.evaluate",
    "audit": "featcache.evaluate._audit",
    "near_duplicate_groups": "featcache.evaluate.neardup",
    "diagnose": "featcache.evaluate.diagnosis",
    "train": "featcache.model._train",
    "export_model": "featcache.model.export",
    "load_model": "featcache.model.predict",
    "check_export": "featcache.model.check",
    "evaluate_model": "featcache.model.heldout",
}

__all__ = sorted(_EXPORTS)


def __dir__():
    """The public API (what ``__all__`` lists) and ``__version__``."""
    return sorted([*__all__, "__version__"])


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
