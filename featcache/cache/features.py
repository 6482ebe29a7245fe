"""The in-memory view of one backbone's rows in a cache."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Features:
    """Feature matrix plus the metadata every later stage needs.

    Attributes
    ----------
    X : ndarray of shape (n, d), float32
    y : ndarray of shape (n,), int64 labels in ``0..K-1`` (Keras class order)
    paths : ndarray of shape (n,), str, paths relative to the data folder,
        always with ``/`` separators, first component is the class folder.
    class_names : list of str, sorted sub-folder names.
    sha256 : ndarray of shape (n,), str, hex digest of each file's bytes.
    backbone : str, the cache entry these rows came from.
    spec : dict, the backbone spec as stored in the cache.
    views : None or ndarray of shape (n, K, d), float32
        Cached augmented views: ``views[i, k]`` is view ``k`` of image ``i``,
        aligned row for row with ``X`` (None when none were loaded).
    """

    X: np.ndarray
    y: np.ndarray
    paths: np.ndarray
    class_names: list[str]
    sha256: np.ndarray
    backbone: str = ""
    spec: dict = field(default_factory=dict)
    views: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Features":
        """Rows ``index`` (a mask or integer array) as a new Features."""
        return Features(self.X[index], self.y[index], self.paths[index],
                        list(self.class_names), self.sha256[index],
                        self.backbone, dict(self.spec),
                        None if self.views is None else self.views[index])
