"""The embed stage: image folder -> frozen backbone -> rows handed to :mod:`featcache.cache`.

- :mod:`~featcache.embedding.scan`: list, label, hash and sniff files; record failures.
- :mod:`~featcache.embedding.decode`: decode + resize, the Keras parity contract.
- :mod:`~featcache.embedding.augment`: seeded augmentation ops for cached views.
- :mod:`~featcache.embedding.registry`, :mod:`~featcache.embedding.backbones`: frozen
  feature extractors and their specs and fingerprints.
- :mod:`~featcache.embedding.runtime`: the engine of the forward pass (TensorFlow, OpenVINO).
- :mod:`~featcache.embedding.run`: one embed run (or one shard), resumable and incremental.
- :mod:`~featcache.embedding.views`: the augmented-views part of a run.

The package is named ``embedding``, not ``embed``, so that ``featcache.embed`` stays the
function: importing a sub-module binds the package name on its parent.
"""
