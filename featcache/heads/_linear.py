"""L-BFGS on smooth linear losses, in float32 with analytic gradients.

Objective (same scaling as scikit-learn's LogisticRegression, so ``C`` means
the same thing)::

    f(W, b) = mean_i loss(x_i W + b, y_i) + ||W||^2 / (2 C n)

The intercept is not penalised. Every operation on the (n, d) matrix is a
float32 GEMM; only the small (d+1, k) parameter vector goes through scipy in
float64. Warm starts (``w0``) make a regularisation path cheap.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import eigh
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning


def xt_dot(Xs, G):
    """``Xs.T @ G`` computed as ``(G.T @ Xs).T``: 1.4x faster with OpenBLAS on row-major ``Xs``
    (4,000 x 1,280 float32, 10 columns: 2.8 against 3.9 ms, one thread)."""
    return (G.T @ Xs).T


def _weighted(loss, grad, sw):
    """(summed loss, gradient) with row ``i`` weighted by ``sw[i]`` if given."""
    if sw is not None:
        loss = loss * (sw if loss.ndim == 1 else sw[:, None])
        grad = grad * sw[:, None]
    return float(np.sum(loss, dtype=np.float64)), grad


def multinomial_loss_grad(Z, Y, sw=None):
    """Summed softmax cross-entropy of logits ``Z`` and its gradient in ``Z``.

    ``Y`` is one-hot with the same shape as ``Z``. Binary problems pass a
    single free column; a fixed zero logit is prepended (plain logistic loss).
    ``sw`` optionally weighs each row (class weights).
    """
    if Y.shape[1] == 1:  # binary: logits [0, z]
        z = Z[:, 0]
        # log(1 + exp(z)) - y z, computed stably
        loss = np.logaddexp(0, z, dtype=np.float32) - Y[:, 0] * z
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # stable sigmoid
        return _weighted(loss, (p - Y[:, 0])[:, None], sw)
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    s = E.sum(axis=1, keepdims=True)
    loss = np.log(s[:, 0]) - np.einsum("ij,ij->i", Z, Y)
    return _weighted(loss, E / s - Y, sw)


def squared_hinge_loss_grad(Z, Y, sw=None):
    """Summed one-vs-rest squared hinge loss and its gradient in ``Z``.

    ``Y`` holds +1/-1 targets, one column per binary problem; ``sw``
    optionally weighs each row.
    """
    r = np.maximum(0, 1 - Y * Z)
    return _weighted(r * r, -2 * r * Y, sw)


def fit_linear(Xs, Y, C, loss_grad, w0=None, tol=1e-4, max_iter=1000,
               pen=None):
    """Minimise the regularised objective; return (W, b, n_iter).

    Parameters
    ----------
    Xs : float32 ndarray (n, d), already standardised.
    Y : float32 ndarray (n, k), targets in the form ``loss_grad`` expects.
    C : float, inverse regularisation strength.
    loss_grad : callable(Z, Y) -> (summed loss, dLoss/dZ).
    w0 : optional float64 ndarray (d + 1, k), warm start.
    tol : float, stop when max |gradient| <= tol (as sklearn's lbfgs).
    max_iter : int, L-BFGS iterations.
    pen : optional float32 (d,), per-feature penalty weights (preconditioning).
    """
    n, d = Xs.shape
    k = Y.shape[1]
    lam = 1.0 / (C * n)

    def fun(theta):
        Wb = theta.reshape(d + 1, k).astype(np.float32)
        W, b = Wb[:d], Wb[d]
        loss, G = loss_grad(Xs @ W + b, Y)
        G /= n
        grad = np.empty((d + 1, k), dtype=np.float64)
        grad[:d] = xt_dot(Xs, G)
        PW = W if pen is None else pen[:, None] * W
        grad[:d] += lam * PW
        grad[d] = G.sum(axis=0)
        f = loss / n + 0.5 * lam * float(np.sum(PW * W, dtype=np.float64))
        return f, grad.ravel()

    theta0 = np.zeros((d + 1) * k) if w0 is None else np.asarray(w0, float).ravel()
    # ftol is loose on purpose: float32 losses cannot resolve 1e-14 changes,
    # and chasing them only burns line searches.
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-10,
                            "maxls": 50})
    if not res.success and res.nit >= max_iter:
        warnings.warn(f"L-BFGS did not converge in {max_iter} iterations; "
                      "raise max_iter or lower C.", ConvergenceWarning, stacklevel=2)
    Wb = res.x.reshape(d + 1, k)
    return Wb[:d], Wb[d], int(res.nit)


def linear_path(Xs, Y, values, loss_grad, w0, tol, max_iter, curvature=None):
    """Yield ``(W, b, n_iter)`` for each ``C`` in ``values`` (strongest first).

    Each fit starts from the previous solution extrapolated linearly along
    the path, which saves about a third of the iterations. With
    ``curvature`` (the loss's typical second derivative), the problem is
    solved in the principal-component basis of ``Xs`` with a diagonal
    preconditioner ``1/sqrt(curvature * eigenvalue + lambda)``: an exact
    change of variables (the L2 penalty is rotation invariant) that cuts
    L-BFGS iterations about 3x for the squared hinge on correlated features.
    """
    n, d = Xs.shape
    V = None
    if curvature is not None:
        # scipy < 1.12's "evd" driver fails on a 1x1 float32 matrix (lwork bug)
        eig, V = eigh((Xs.T @ Xs) / n, driver="evd" if d > 1 else None,
                      overwrite_a=True)
        eig = np.maximum(eig, 0).astype(np.float32)
        Xs = Xs @ V
    w0, prev = np.asarray(w0, dtype=np.float64), None
    for C in values:
        start = w0 if prev is None else w0 + (w0 - prev)
        Z, D = Xs, None
        if V is not None:
            D = (1.0 / np.sqrt(curvature * eig + 1.0 / (C * n))).astype(np.float32)
            Z = Xs * D
            start = start.copy()
            start[:d] /= D[:, None]
        W, b, n_iter = fit_linear(Z, Y, C, loss_grad, w0=start, tol=tol,
                                  max_iter=max_iter,
                                  pen=None if D is None else D * D)
        if D is not None:
            W = W * D[:, None]
        prev, w0 = w0, np.vstack([W, b])
        yield (W if V is None else V @ W), b, n_iter


def fold_scaler(W, b, scaler):
    """Express weights learned on standardised features in raw feature units.

    ``x_s = (x - mean) / scale`` so ``x_s W + b = x (W / scale) + b'``.
    """
    if scaler is None:
        return W, b
    Wr = W / scaler.scale_[:, None]
    return Wr, b - scaler.mean_ @ Wr
