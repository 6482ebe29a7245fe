"""From a cache to a classifier: train the head, export it with its backbone, predict.

Imported lazily: ``featcache.model.predict`` (serving) never loads the training code.
"""
from importlib import import_module

_EXPORTS = {
    "train": "_train", "TrainResult": "_train", "Choice": "_train",
    "export_model": "export", "load_model": "predict", "LoadedModel": "predict",
    "check_export": "check", "evaluate_model": "heldout",
}

__all__ = ["Choice", "LoadedModel", "TrainResult", "check_export", "evaluate_model",
           "export_model", "load_model", "train"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"featcache.model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'featcache.model' has no attribute {name!r}")
