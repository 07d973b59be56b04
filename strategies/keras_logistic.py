"""The probes' solver in TensorFlow: the same problems as strategies/logistic.py, to the same optimum.

Each of B problems minimises mean cross-entropy + ||W||^2 / (2 C n) (scikit-learn's L2 penalty convention,
rescaled; the bias is not penalised) over n support samples in d dimensions, in float64. The minimiser
lies in the span of the samples, so with the thin QR factorisation X^T = Q R the problem is the same one
on the n-or-fewer-dimensional features F = X Q (W = M Q^T, ||W|| = ||M||): Newton's method on (M, b) with
(classes * (m + 1))-sized Hessians, m = min(n, d). The softmax is unchanged by adding one constant to every
bias, so the Hessian is singular along that direction; it is added to the Hessian as a rank-one term,
which leaves steps orthogonal to it, so the biases keep summing to zero from their zero start (as the
PyTorch solvers', whose bias gradients sum to zero).

Every problem has its own Newton step and backtracking (Armijo) line search, and stops on its own when
the largest entry of its gradient in W and b is below ``tolerance`` (the PyTorch probe's rule), so a
problem's solution never depends on the other problems of the batch.
"""

# ruff: noqa: I001 - strategies.keras_backbone is imported first: it imports TensorFlow quietly
from __future__ import annotations

import strategies.keras_backbone  # noqa: F401 - first: it imports TensorFlow quietly
import numpy as np
import tensorflow as tf

LINE_SEARCH = 0.5 ** np.arange(31)  # step lengths tried, longest first


def _objective(phi: tf.Tensor, onehot: tf.Tensor, theta: tf.Tensor, penalised: tf.Tensor, C: float) -> tf.Tensor:
    """phi (..., n, m+1), theta (..., k, m+1) -> (...) objective values."""
    n = tf.cast(tf.shape(phi)[-2], tf.float64)
    logits = tf.linalg.matmul(phi, theta, transpose_b=True)
    data = tf.reduce_mean(tf.reduce_logsumexp(logits, -1) - tf.reduce_sum(logits * onehot, -1), -1)
    return data + tf.reduce_sum(tf.square(theta) * penalised, [-2, -1]) / (2 * C * n)


def fit_logistic_regression(x, y, classes: int, C: float, max_iter: int = 100,
                            tolerance: float = 1e-6) -> tuple[tf.Tensor, tf.Tensor]:
    """x (B, n, d) features, y (B, n) labels in 0..classes-1 -> weights (B, classes, d), bias (B, classes),
    float64 TensorFlow tensors."""
    x = tf.cast(tf.convert_to_tensor(x), tf.float64)
    batch, n = int(x.shape[0]), int(x.shape[1])
    k = classes
    q, r = tf.linalg.qr(tf.transpose(x, [0, 2, 1]))  # q (B, d, m), r (B, m, n)
    m = int(q.shape[-1])
    phi = tf.concat([tf.transpose(r, [0, 2, 1]), tf.ones((batch, n, 1), tf.float64)], -1)  # (B, n, m+1)
    onehot = tf.one_hot(tf.convert_to_tensor(y), k, dtype=tf.float64)
    penalised = tf.constant(np.r_[np.ones(m), 0.0], tf.float64)
    size = k * (m + 1)
    bias_direction = np.zeros((k, m + 1))
    bias_direction[:, m] = 1 / np.sqrt(k)
    null = tf.constant(np.outer(bias_direction.ravel(), bias_direction.ravel()), tf.float64)
    curvature = tf.constant(np.diag(np.tile(np.r_[np.ones(m), 0.0], k)) / (C * n), tf.float64) + null
    theta = tf.zeros((batch, k, m + 1), tf.float64)
    steps = tf.constant(LINE_SEARCH, tf.float64)
    for _ in range(max_iter):
        p = tf.nn.softmax(tf.linalg.matmul(phi, theta, transpose_b=True), -1)  # (B, n, k)
        residual = (p - onehot) / n
        grad = tf.linalg.matmul(residual, phi, transpose_a=True) + theta * penalised / (C * n)  # (B, k, m+1)
        grad_w = tf.linalg.matmul(grad[..., :m], q, transpose_b=True)  # in the original d dimensions
        largest = tf.maximum(tf.reduce_max(tf.abs(grad_w), [1, 2]), tf.reduce_max(tf.abs(grad[..., m]), 1))
        active = largest >= tolerance
        if not bool(tf.reduce_any(active)):
            break
        s = (tf.linalg.diag(p) - p[..., :, None] * p[..., None, :]) / n  # (B, n, k, k)
        hessian = tf.reshape(tf.einsum("bnij,bnp,bnq->bipjq", s, phi, phi), (batch, size, size)) + curvature
        g = tf.reshape(grad, (batch, size, 1))
        step = tf.reshape(tf.linalg.cholesky_solve(tf.linalg.cholesky(hessian), g), (batch, k, m + 1))
        # Armijo backtracking, every step length at once: the longest with sufficient decrease
        trials = theta[None] - steps[:, None, None, None] * step[None]  # (T, B, k, m+1)
        values = _objective(phi[None], onehot[None], trials, penalised, C)  # (T, B)
        slope = tf.reduce_sum(grad * step, [1, 2])
        ok = values <= _objective(phi, onehot, theta, penalised, C)[None] - 1e-4 * steps[:, None] * slope[None]
        first = tf.where(tf.reduce_any(ok, 0), tf.argmax(tf.cast(ok, tf.int32), 0), len(LINE_SEARCH) - 1)
        chosen = tf.gather(tf.transpose(trials, [1, 0, 2, 3]), first, batch_dims=1)
        theta = tf.where(active[:, None, None], chosen, theta)
    weights = tf.linalg.matmul(theta[..., :m], q, transpose_b=True)
    return weights, theta[..., m]


def l2_normalise(x: np.ndarray | tf.Tensor) -> tf.Tensor:
    """Rows scaled to unit length (as torch.nn.functional.normalize: norms below 1e-12 are taken as 1e-12)."""
    x = tf.convert_to_tensor(x)
    return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), tf.cast(1e-12, x.dtype))


def fit_probe(support, labels, ways: int, C: float, max_iter: int = 100,
              tolerance: float = 1e-6) -> tuple[tf.Tensor, tf.Tensor]:
    """Probes (float64 weights (B, ways, d), bias (B, ways)) on L2-normalised support features (B, n, d)."""
    return fit_logistic_regression(l2_normalise(tf.cast(support, tf.float64)), labels, ways, C, max_iter, tolerance)


def apply_probe(query, weights: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """Query features (B, q, d) -> (B, q, ways) float32 logits."""
    feats = l2_normalise(tf.cast(query, tf.float64))
    return tf.cast(tf.linalg.matmul(feats, weights, transpose_b=True) + bias[:, None, :], tf.float32)
