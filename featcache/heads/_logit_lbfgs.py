"""L-BFGS for linear models whose line search runs on the logits.

For a linear model the logits along a search direction ``P`` are affine in
the step: ``Z(t) = Z + t (Xs P_W + P_b)``. One GEMM per iteration gives the
direction's logits, every trial step of the line search then costs only the
(n, k) loss, and the accepted step's loss gradient feeds the one other GEMM
(``Xs.T @ G``). A generic L-BFGS (scipy's) pays two GEMMs per trial step; the
(d, k) products are memory-bound, so these passes over ``Xs`` are the cost.

Same objective, stopping rule (max |gradient| <= tol) and warm starts as
:func:`featcache.heads._linear.fit_linear`.
"""
from __future__ import annotations

import warnings
from collections import deque

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from featcache.heads._linear import xt_dot

_MEMORY = 10  # correction pairs, as scipy's L-BFGS-B default
_C1, _C2 = 1e-4, 0.9  # Wolfe constants of scipy's line search


class _Objective:
    """Value and slope of the objective along one direction, from cached logits."""

    def __init__(self, Xs, Y, lam, loss_grad):
        self.Xs, self.Y, self.lam, self.loss_grad = Xs, Y, lam, loss_grad
        self.n, self.d = Xs.shape

    def logits(self, theta):
        """float32 logits, as the loss works in float32 (a float64 copy costs more)."""
        W = theta[:self.d].astype(np.float32)
        return self.Xs @ W + theta[self.d].astype(np.float32)

    def at(self, theta, Z):
        """Objective value and dLoss/dZ / n at parameters ``theta`` with logits ``Z``."""
        loss, G = self.loss_grad(Z, self.Y)
        W = theta[:self.d]
        return loss / self.n + 0.5 * self.lam * float(np.sum(W * W)), G / self.n

    def gradient(self, theta, G):
        """Full gradient from dLoss/dZ: the iteration's second pass over ``Xs``."""
        g = np.empty_like(theta)
        g[:self.d] = xt_dot(self.Xs, G)
        g[:self.d] += self.lam * theta[:self.d]
        g[self.d] = G.sum(axis=0, dtype=np.float64)
        return g


def logit_path(Xs, Y, values, loss_grad, w0, tol, max_iter):
    """Yield ``(W, b, n_iter)`` for each ``C`` in ``values`` (strongest first).

    Each fit starts from the previous solution extrapolated linearly along
    the path, as :func:`featcache.heads._linear.linear_path`; the start's
    logits are extrapolated the same way, which saves a pass over ``Xs``.
    """
    theta = np.asarray(w0, dtype=np.float64)
    Z = _Objective(Xs, Y, 0.0, loss_grad).logits(theta)
    prev = None
    for C in values:
        start, Z0 = (theta, Z) if prev is None else (2 * theta - prev[0], 2 * Z - prev[1])
        new, Z_new, n_iter = fit_linear_logits(Xs, Y, C, loss_grad, start, tol, max_iter, Z0)
        prev, theta, Z = (theta, Z), new, Z_new
        yield new[:-1], new[-1], n_iter


def fit_linear_logits(Xs, Y, C, loss_grad, w0, tol=1e-4, max_iter=1000, Z0=None):
    """Minimise ``loss(Xs W + b) / n + ||W||^2 / (2 C n)``.

    Parameters as :func:`featcache.heads._linear.fit_linear` (no ``pen``);
    ``w0`` is the (d + 1, k) warm start and ``Z0`` its logits if known.

    Returns
    -------
    (theta (d + 1, k) float64, its logits (n, k) float32, n_iter)
    """
    obj = _Objective(Xs, Y, 1.0 / (C * Xs.shape[0]), loss_grad)
    theta = np.array(w0, dtype=np.float64)
    Z = obj.logits(theta) if Z0 is None else Z0
    f, G = obj.at(theta, Z)
    g = obj.gradient(theta, G)
    pairs = deque(maxlen=_MEMORY)
    it = 0
    while np.max(np.abs(g)) > tol and it < max_iter:
        it += 1
        P = -_two_loop(g, pairs)
        if np.sum(P * g) >= 0:  # not a descent direction (rounding): restart
            pairs.clear()
            P = -g
        ZP = obj.logits(P)  # the direction's logits: this iteration's first pass over Xs
        step, f_new, G, Z_new = _line_search(obj, theta, Z, f, g, P, ZP,
                                             1.0 if pairs else 1.0 / np.linalg.norm(g))
        if step is None:  # no decrease possible at float precision: converged
            break
        theta_new = theta + step * P
        g_new = obj.gradient(theta_new, G)
        s, y = theta_new - theta, g_new - g
        if np.sum(s * y) > 1e-12 * np.sum(y * y):
            pairs.append((s, y))
        converged = f - f_new <= 1e-10 * max(abs(f), abs(f_new), 1.0)
        theta, Z, f, g = theta_new, Z_new, f_new, g_new
        if converged:
            break
    if it >= max_iter and np.max(np.abs(g)) > tol:
        warnings.warn(f"L-BFGS did not converge in {max_iter} iterations; "
                      "raise max_iter or lower C.", ConvergenceWarning, stacklevel=2)
    return theta, Z, it


def _two_loop(g, pairs):
    """L-BFGS two-loop recursion: the inverse-Hessian estimate times ``g``."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        a = np.sum(s * q) / np.sum(s * y)
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y = pairs[-1]
        q *= np.sum(s * y) / np.sum(y * y)
    for (s, y), a in zip(pairs, reversed(alphas)):
        q += (a - np.sum(y * q) / np.sum(s * y)) * s
    return q


def _line_search(obj, theta, Z, f, g, P, ZP, step):
    """A step meeting the strong Wolfe conditions, each trial on cached logits.

    Returns ``(step, f, dLoss/dZ / n, Z)`` at the accepted step, or
    ``(None, ...)`` when no trial decreases the objective.
    """
    slope0 = float(np.sum(g * P))
    lo, hi = 0.0, np.inf
    for _ in range(40):
        theta_t = theta + step * P
        Z_t = Z + np.float32(step) * ZP
        f_t, G_t = obj.at(theta_t, Z_t)
        slope = _slope(obj, theta_t, G_t, P, ZP)
        if f_t > f + _C1 * step * slope0 or not np.isfinite(f_t):
            hi = step
        elif abs(slope) <= -_C2 * slope0:
            return step, f_t, G_t, Z_t
        elif slope < 0:
            lo = step
        else:
            hi = step
        step = 2.0 * step if hi == np.inf else 0.5 * (lo + hi)
    if lo > 0:  # the bracket shrank to float precision: take its decreasing end
        Z_t = Z + np.float32(lo) * ZP
        f_t, G_t = obj.at(theta + lo * P, Z_t)
        return lo, f_t, G_t, Z_t
    return None, f, None, Z


def _slope(obj, theta, G, P, ZP):
    """d objective / d step at ``theta`` along ``P``, without touching ``Xs``."""
    d = obj.d
    return float(np.sum(G * ZP, dtype=np.float64) + obj.lam * np.sum(theta[:d] * P[:d]))
