"""Keras Dense-softmax head. TensorFlow/Keras are imported inside ``fit`` only."""
from __future__ import annotations

import random
import threading
from numbers import Integral, Real

import numpy as np

from featcache.heads._base import (CLASS_WEIGHT, BaseHead, Interval, StrOptions,
                                   prepare_fit, row_weights)
from featcache.heads._linear import fold_scaler
from featcache.heads.batch_regularisers import batch_regulariser
from featcache.heads._softmax_parts import inner_split, loss_sums
from featcache.heads._streaming import is_streamed, map_blocks, stream_errors

_FRACTION = Interval(Real, 0, 1, closed="left")


class SoftmaxHead(BaseHead):
    """A single Keras ``Dense(n_classes, softmax)`` layer on standardised features.

    Trained with Keras ``model.fit`` on one-hot labels, with early stopping on
    an inner stratified validation split. After training the weights are
    copied out (with the standardisation folded in), so ``predict`` and
    ``predict_proba`` are plain numpy, the fitted head pickles without
    TensorFlow, and :meth:`to_keras` rebuilds an equivalent Keras model.

    Parameters
    ----------
    l2 : float, default=1e-3
        L2 weight decay on the kernel, added to the mean loss as
        ``l2 * sum(W**2)`` (Keras' ``L2`` regulariser). 0 disables it.
    dropout : float in [0, 1), default=0.0
        Dropout on the input features during training.
    label_smoothing : float in [0, 1), default=0.0
    optimizer : {"adam", "adamw", "sgd", "rmsprop", "nadam", "adagrad"}
    learning_rate : float, default=0.005
    epochs : int, default=100
        Maximum epochs; early stopping usually ends training sooner.
    batch_size : int or "auto", default="auto"
        ``"auto"`` takes the largest power of two giving at least 4 steps per
        epoch, between 16 and 512 (see :func:`auto_batch_size`): 512 from
        2,048 training rows up, 16 to 64 for a few hundred rows, so small sets
        are not stopped before they have learnt.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the training rows (stratified),
        stop when their loss has not improved for ``patience`` epochs and
        restore the best epoch's weights.
    validation_fraction : float, default=0.1
    patience : int, default=5
    standardize : bool, default=True
    seed : int, default=0
        Seeds weights, dropout, shuffling and the inner split: the same seed
        and data give the same model.
    class_weight : None, "balanced" or dict, default=None
        Weight of each class's rows in the training and early-stopping losses;
        ``"balanced"`` as in :class:`LogisticHead`.
    mixup_alpha : float >= 0, default=0.0
        Mixup on features (Zhang et al. 2018): each training batch is replaced
        by ``lam * batch + (1 - lam) * shuffled batch`` (one-hot labels and row
        weights alike) with one ``lam ~ Beta(alpha, alpha)`` per batch. 0 turns
        it off; larger alpha mixes more (stronger regularisation).
    feature_noise : float >= 0, default=0.0
        Standard deviation of Gaussian noise added to the training features
        as fed to the layer (standardised units when ``standardize=True``),
        fresh every batch. 0 turns it off.

    Both regularisers act on training batches only (the early-stopping split
    and predictions see clean features) and are seeded by ``seed``, so fits
    stay deterministic. Sweep them like ``l2``:
    ``sweep(features, "softmax", param="mixup_alpha")`` uses
    ``param_grids["mixup_alpha"]``.

    Attributes
    ----------
    classes_, n_features_in_, coef_ (n_classes, n_features) and intercept_ in
    raw feature units, scaler_, n_epochs_ (epochs run), best_epoch_ (1-based),
    history_ (dict of per-epoch losses/metrics).
    """

    reg_param = "l2"
    default_grid = np.logspace(-6, -1, 10)
    stronger_when_larger = True
    # CV runs this head's folds one after another: its fits share one compiled
    # Keras model and process-wide seeds (a lock runs them one at a time), and
    # TensorFlow already spreads each fit over the cores
    parallel_folds = False
    #: default grids of the other parameters ``sweep(param=...)`` can sweep
    param_grids = {"mixup_alpha": np.array([0.05, 0.1, 0.2, 0.4, 1.0, 2.0]),
                   "feature_noise": np.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0])}
    _can_stream = True  # fits from rows streamed off the cache (see heads._streaming)
    _parameter_constraints = {
        "l2": [Interval(Real, 0, None, closed="left")],
        "dropout": [_FRACTION],
        "label_smoothing": [_FRACTION],
        "optimizer": [StrOptions({"adam", "adamw", "sgd", "rmsprop", "nadam",
                                  "adagrad"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"),
                       StrOptions({"auto"})],
        "early_stopping": ["boolean"],
        "validation_fraction": [_FRACTION],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "seed": [Interval(Integral, 0, None, closed="left")],
        "class_weight": CLASS_WEIGHT,
        "mixup_alpha": [Interval(Real, 0, None, closed="left")],
        "feature_noise": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, l2=1e-3, dropout=0.0, label_smoothing=0.0, optimizer="adam",
                 learning_rate=0.005, epochs=100, batch_size="auto",
                 early_stopping=True, validation_fraction=0.1, patience=5,
                 standardize=True, seed=0, class_weight=None, mixup_alpha=0.0,
                 feature_noise=0.0):
        self.l2 = l2
        self.dropout = dropout
        self.label_smoothing = label_smoothing
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.seed = seed
        self.class_weight = class_weight
        self.mixup_alpha = mixup_alpha
        self.feature_noise = feature_noise

    def fit(self, X, y):
        """Train on ``X`` (n_samples, n_features) and labels ``y``; return self.

        ``X`` may be rows streamed from a cache (:class:`featcache.cache.streaming.CachedRows`,
        e.g. ``featcache.open_features(..., streaming=True).X[train]``): training then
        reads them in chunks through a shuffle buffer (see :mod:`featcache.heads._streaming`).
        """
        self._fit_path_sorted(X, y, [self.l2], targets=[self])
        return self

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes); streamed rows block by block."""
        from sklearn.utils.validation import check_is_fitted, validate_data
        check_is_fitted(self)
        if is_streamed(X):
            return map_blocks(self, X, self._proba)
        return self._proba(validate_data(self, X, reset=False, dtype=[np.float64, np.float32]))

    def _proba(self, X):
        z = X @ self.coef_.T.astype(X.dtype) + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels."""
        proba = self.predict_proba(X)  # checks fitted state first
        return self.classes_[proba.argmax(axis=1)]

    def to_keras(self):
        """A Keras model computing ``predict_proba`` on raw features."""
        import keras
        model = keras.Sequential([keras.Input((self.n_features_in_,)),
                                  keras.layers.Dense(len(self.classes_),
                                                     activation="softmax")])
        model.layers[-1].set_weights([self.coef_.T.astype("float32"),
                                      self.intercept_.astype("float32")])
        return model

    def _fit_path_sorted(self, X, y, values, targets=None):
        """Fit each value from the same seeded start, reusing one Keras graph.

        Early-stopped SGD depends on its starting point, so warm starts would
        break the fit_path equivalence (same result as a fresh fit); instead
        the standardisation, the inner split and the compiled model are
        shared across values.
        """
        self._check_params()
        if is_streamed(X):
            from featcache.heads._streaming import streamed_inputs
            scaler, train, val = streamed_inputs(self, X, y)
        else:
            scaler, train, val = self._array_inputs(X, y)
        if targets is None:
            targets = [self._with_value(v) for v in values]
        with _TRAINERS_LOCK, stream_errors(train):
            trainer = _get_trainer(self, self.n_features_in_, len(self.classes_))
            fits = [trainer.train(self, train, val, float(l2)) for l2 in values]
        for est, (W, b, history) in zip(targets, fits):
            est.classes_ = self.classes_
            est.n_features_in_ = self.n_features_in_
            if hasattr(self, "feature_names_in_"):
                est.feature_names_in_ = self.feature_names_in_
            est.scaler_ = scaler
            Wr, br = fold_scaler(W.astype(np.float64), b.astype(np.float64), scaler)
            est.coef_, est.intercept_ = Wr.T.copy(), br
            est.history_ = history
            est.n_epochs_ = len(history["loss"])
            losses = history.get("val_loss", history["loss"])
            est.best_epoch_ = int(np.argmin(losses)) + 1
        return targets

    def _array_inputs(self, X, y):
        """(scaler, training rows, validation rows or None) held in memory."""
        Xs, y_enc, scaler = prepare_fit(self, X, y, self.standardize)
        tr, va = inner_split(self, y_enc)
        onehot = np.eye(len(self.classes_), dtype=np.float32)[y_enc]
        sw = row_weights(self, y_enc)
        train_xy, val_xy = ((Xs[i], onehot[i]) + (() if sw is None else (sw[i],))
                            for i in (tr, va))
        return scaler, ArrayRows(train_xy), ArrayValidation(val_xy) if len(va) else None


def auto_batch_size(n_rows):
    """Largest power of two with at least 4 batches in ``n_rows``, in [16, 512].

    A fixed 512 gave a 300-row set one step per epoch: 100 epochs were 100
    steps, 65% training accuracy where 92% was reachable; from
    2,048 training rows up this is 512, the fast setting for large caches.
    """
    return int(2 ** np.clip(np.floor(np.log2(max(n_rows, 1) / 4)), 4, 9))


_TRAINERS = {}  # compiled models reused across fits: tracing costs ~1 s each
_TRAINERS_LOCK = threading.Lock()  # one fit at a time per process (shared models)


def _get_trainer(head, d, k):
    """A cached :class:`_KerasTrainer` for this architecture and optimiser."""
    key = (d, k, head.dropout, head.optimizer, float(head.learning_rate),
           head.label_smoothing, head.seed)
    if key not in _TRAINERS:
        if len(_TRAINERS) >= 8:
            _TRAINERS.pop(next(iter(_TRAINERS)))
        _TRAINERS[key] = _KerasTrainer(head, d, k)
    return _TRAINERS[key]


class _KerasTrainer:
    """One compiled Keras model, reset to the same seeded state for every fit.

    Re-using the compiled model skips Keras' per-model tracing; restoring
    every model and optimizer variable (weights, moments, step counter,
    dropout RNG state) makes each fit identical to one on a fresh model.
    """

    def __init__(self, head, d, k):
        import keras
        self.keras = keras
        with _seeded(head.seed):
            self.l2_var = keras.Variable(0.0, trainable=False, name="l2")
            self.model = self._build(head, d, k)
            opt = keras.optimizers.get({"class_name": head.optimizer,
                                        "config": {"learning_rate":
                                                   head.learning_rate}})
            loss = keras.losses.CategoricalCrossentropy(
                label_smoothing=head.label_smoothing)
            self.model.compile(optimizer=opt, loss=loss)
            opt.build(self.model.trainable_variables)
        self.state = [v.numpy() for v in self._variables()]

    def _variables(self):
        return list(self.model.variables) + list(self.model.optimizer.variables)

    def _build(self, head, d, k):
        keras, l2_var = self.keras, self.l2_var
        layers = [keras.Input((d,))]
        if head.dropout > 0:
            layers.append(keras.layers.Dropout(head.dropout, seed=head.seed))
        class WeightDecay(keras.regularizers.Regularizer):
            # a variable, not a float: one graph serves every l2 (a Regularizer
            # subclass, since Keras < 3.3 rejects plain functions)
            def __call__(self, w):
                return l2_var * keras.ops.sum(keras.ops.square(w))

        layers.append(keras.layers.Dense(
            k, activation="softmax", kernel_regularizer=WeightDecay(),
            kernel_initializer=keras.initializers.GlorotUniform(seed=head.seed)))
        return keras.Sequential(layers)

    def train(self, head, train, val, l2):
        """Train from the seeded initial state; return (W, b, history).

        ``train`` gives the rows (``n``, ``dataset(batch, seed)``), ``val``
        the early-stopping rows (``sums(W, b)``) or None.
        """
        keras = self.keras
        for var, value in zip(self._variables(), self.state):
            var.assign(value)
        self.l2_var.assign(l2)
        n = train.n
        batch = auto_batch_size(n) if head.batch_size == "auto" else head.batch_size
        data = train.dataset(batch, head.seed)
        if head.mixup_alpha > 0 or head.feature_noise > 0:
            data = data.enumerate().map(batch_regulariser(head))
        callbacks = []
        if val is not None:
            callbacks = [_val_loss_callback(val), keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=head.patience,
                restore_best_weights=True)]
        with _seeded(head.seed):
            hist = self.model.fit(data, epochs=head.epochs, callbacks=callbacks,
                                  steps_per_epoch=-(-n // batch),
                                  shuffle=False, verbose=0)
        W, b = self.model.layers[-1].get_weights()
        history = {key: [float(v) for v in vals]
                   for key, vals in hist.history.items()}
        return W, b, history


class ArrayRows:
    """Training rows in memory, served by a seeded tf.data pipeline.

    Shuffles row indices, not rows: refilling a buffer of feature rows every
    epoch cost more than the training step itself; and repeats, so one
    iterator serves every epoch (re-creating it each epoch cost 4x the
    training on a 300-row set).
    """

    def __init__(self, arrays):
        self.arrays, self.n = arrays, len(arrays[0])  # X, Y and maybe row weights

    def dataset(self, batch, seed):
        import tensorflow as tf
        tensors = [tf.constant(a) for a in self.arrays]

        def rows(i):
            return tuple(tf.gather(a, i) for a in tensors)
        return (tf.data.Dataset.range(self.n).shuffle(self.n, seed=seed).batch(batch)
                .repeat().map(rows).prefetch(2))


class ArrayValidation:
    """Early-stopping rows in memory."""

    def __init__(self, arrays):
        self.arrays = arrays

    def sums(self, W, b):
        X, Y, sw = (*self.arrays, None)[:3]
        return loss_sums(X @ W + b, Y, sw)


def _val_loss_callback(val):
    """Keras callback adding ``val_loss``/``val_accuracy`` to the epoch logs.

    Keras' own validation pass costs more per epoch than training this layer;
    a (n_val, d) x (d, k) product in numpy is near free. The loss is plain
    cross-entropy (no label smoothing or penalty), the quantity to stop on,
    averaged with the class weights when the rows carry weights.
    """
    import keras

    class ValLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            W, b = self.model.layers[-1].get_weights()
            loss, weight, correct, n = val.sums(W, b)
            logs["val_loss"] = loss / weight
            logs["val_accuracy"] = correct / n

    return ValLoss()


class _seeded:
    """Seed Keras/TF/numpy/random for a block, restoring numpy/random after."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        import keras
        self.np_state, self.py_state = np.random.get_state(), random.getstate()
        keras.utils.set_random_seed(int(self.seed))

    def __exit__(self, *exc):
        np.random.set_state(self.np_state)
        random.setstate(self.py_state)
