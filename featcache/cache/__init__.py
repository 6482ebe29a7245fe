"""The HDF5 feature cache: layout, verified reading, and the write protocol.

Layout (schema version 2), readable with h5py alone::

    /                      attrs: schema_version, featcache_version
    /backbones/<key>/      one entry per backbone fingerprint
        attrs: spec (JSON), fingerprint, class_names (JSON), data_dir, feature_dim
        features  float32 or float16 (n, d)
        paths     utf-8 str (n,)   relative to the data folder, '/'-separated
        labels    int32 (n,)       index into class_names (Keras order)
        sha256    ascii (n,)       hex digest of the file's bytes
        checksum  uint32 (n,)      CRC-32 of the row: features bytes (float32, little
                                   endian), then "label NUL path NUL sha256" in UTF-8
        failures/ path, sha256, reason   files that could not be embedded
        views/<vkey>/  augmented views of the rows, see :mod:`featcache.cache.views`

``features`` is float32 unless the entry was created with ``dtype="float16"``
(clean rows and views share the entry's precision; see
:mod:`featcache.cache.dtypes`). The checksum is always over the stored values
read as float32 (float16 -> float32 is exact), so its definition does not
depend on the precision. Readers return float32 unless asked otherwise.

Schema 1 (featcache 0.1.0) is the same without ``checksum``; such entries read
unverified, and the next ``embed`` of the entry adds checksums.

A merged cache (:mod:`featcache.cache._merge`) has the same layout; its
datasets may be HDF5 Virtual Datasets over ``CACHE.h5.shards/shard-i-of-N.h5``,
and its entries carry ``merged_from`` (JSON: shards, copied).

Rows are in insertion order; ``load_features`` sorts them by path. Every read
(``load_features``, ``cache_info``, ``embed``) verifies the checksums; see
:mod:`featcache.cache.read`. Writing: :mod:`featcache.cache.write`.
"""
from featcache.cache.layout import ROOT, SCHEMA_VERSION, entry_key, real_cache_path
from featcache.cache.read import EntryRows, open_read, read_entry, read_failures
from featcache.cache.load import load_features, load_views
from featcache.cache.info import cache_info
from featcache.cache.write import save_features, writer_lock
from featcache.cache._merge import MergeSummary, merge

__all__ = ["ROOT", "SCHEMA_VERSION", "EntryRows", "MergeSummary", "cache_info", "entry_key",
           "load_features", "load_views", "merge", "open_read", "read_entry", "read_failures",
           "real_cache_path", "save_features", "writer_lock"]
