"""Multinomial logistic regression for many small problems at once (the probes' solver).

Each problem minimises mean cross-entropy + ||W||^2 / (2 C n) (scikit-learn's L2 penalty convention,
rescaled; the bias is not penalised) over n support samples in d dimensions, in float64. Its minimiser
lies in the span of the samples (the gradient in W is a combination of them), so W = A X with A of size
(classes, n): Newton's method on (A, b) works with (classes * (n + 1))-sized Hessians, tiny next to the
(classes * (d + 1)) of W itself when n << d, as in few-shot episodes (with n > d, on W directly).

Every problem has its own Newton step and backtracking line search and stops on its own when the largest
entry of its gradient (in W and b) is below ``tolerance``, so a problem's solution never depends on the
other problems of the batch, and the host is consulted once per Newton iteration (about ten), not once
per line-search step. Problems too large for dense Newton fall back to L-BFGS on their sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEWTON_LIMIT = 2048  # largest classes * (n + 1) solved with dense Newton steps


def _objective(core: torch.Tensor, gram: torch.Tensor, Y: torch.Tensor, theta: torch.Tensor, b: torch.Tensor,
               C: float) -> torch.Tensor:
    n = core.shape[1]
    logits = core @ theta.transpose(1, 2) + b[:, None, :]
    data = (torch.logsumexp(logits, -1) - (logits * Y).sum(-1)).mean(1)
    return data + ((theta @ gram) * theta).sum((1, 2)) / (2 * C * n)


def newton(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, max_iter: int,
           tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, n, d), y (B, n) -> weights (B, classes, d), bias (B, classes), float64. The weights are
    W = theta X with theta (classes, n) when n <= d (the span of the samples), else W = theta directly."""
    x = x.double()
    batch, n, d = x.shape
    k = classes
    span = n <= d
    core = x @ x.transpose(1, 2) if span else x  # (B, n, r): what the parameters multiply, per sample
    r = core.shape[2]
    gram = core if span else torch.eye(d, dtype=x.dtype, device=x.device).expand(batch, d, d)  # penalty metric
    Y = F.one_hot(y, k).double()
    Phi = torch.cat([core, torch.ones(batch, n, 1, dtype=x.dtype, device=x.device)], -1)
    m = k * (r + 1)
    theta = torch.zeros(batch, k, r, dtype=x.dtype, device=x.device)
    b = torch.zeros(batch, k, dtype=x.dtype, device=x.device)
    penalty = torch.zeros(batch, k, r + 1, k, r + 1, dtype=x.dtype, device=x.device)
    eye_k = torch.eye(k, dtype=x.dtype, device=x.device)
    penalty[:, :, :r, :, :r] = eye_k[None, :, None, :, None] * gram[:, None, :, None, :] / (C * n)
    scale = gram.diagonal(dim1=1, dim2=2).mean(1) + 1
    ridge = 1e-10 * scale[:, None, None] * torch.eye(m, dtype=x.dtype, device=x.device)  # null(K) directions
    for _ in range(max_iter):
        P = torch.softmax(core @ theta.transpose(1, 2) + b[:, None, :], -1)
        R = P - Y
        weights = theta @ x if span else theta
        grad_w = R.transpose(1, 2) @ x / n + weights / (C * n)
        grad_b = R.sum(1) / n
        active = torch.maximum(grad_w.abs().amax((1, 2)), grad_b.abs().amax(1)) >= tolerance
        if not bool(active.any()):
            break
        grad_theta = (R.transpose(1, 2) @ core + theta @ gram / C) / n
        g = torch.cat([grad_theta, grad_b[..., None]], -1).reshape(batch, m)
        S = torch.diag_embed(P) - P[..., :, None] * P[..., None, :]  # (B, n, k, k)
        H = (torch.einsum("bnij,bnp,bnq->bipjq", S, Phi, Phi) / n + penalty).reshape(batch, m, m) + ridge
        factor, info = torch.linalg.cholesky_ex(H)
        step = torch.cholesky_solve(g[..., None], factor)[..., 0]
        if bool((info > 0).any()):  # not positive definite in floating point: least squares instead
            step = torch.where((info > 0)[:, None], torch.linalg.lstsq(H, g[..., None]).solution[..., 0], step)
        theta, b = _line_search(core, gram, Y, theta, b, C, step.reshape(batch, k, r + 1), g, active)
    return (theta @ x if span else theta), b


def _line_search(core, gram, Y, theta, b, C, step, g, active, shrink: float = 0.5, tries: int = 40):
    """Per problem: the largest alpha in 1, 1/2, ... with sufficient decrease (Armijo); inactive problems
    stay where they are."""
    f0 = _objective(core, gram, Y, theta, b, C)
    slope = (g * step.reshape(g.shape)).sum(1)  # the step is a descent direction: slope > 0
    alpha = torch.where(active, 1.0, 0.0).to(theta.dtype)
    for _ in range(tries):
        trial_t, trial_b = theta - alpha[:, None, None] * step[..., :-1], b - alpha[:, None] * step[..., -1]
        ok = _objective(core, gram, Y, trial_t, trial_b, C) <= f0 - 1e-4 * alpha * slope
        if bool((ok | ~active).all()):
            break
        alpha = torch.where(ok | ~active, alpha, alpha * shrink)
    return trial_t, trial_b


def lbfgs(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, max_iter: int,
          tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The same problems by L-BFGS on their sum (used where dense Newton steps are too large)."""
    x = x.double()
    batch, n, dim = x.shape
    w = torch.zeros(batch, classes, dim, dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(batch, classes, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (B, n, classes)
        loss = F.cross_entropy(logits.reshape(-1, classes), y.reshape(-1), reduction="sum") / n
        loss = loss + (w * w).sum() / (2 * C * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, max_iter: int,
                            tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """B independent problems: x (B, n, d), y (B, n) -> weights (B, classes, d), bias (B, classes)."""
    with torch.no_grad():
        if classes * (min(x.shape[1], x.shape[2]) + 1) <= NEWTON_LIMIT:
            return newton(x, y, classes, C, max_iter, tolerance)
    return lbfgs(x, y, classes, C, max_iter, tolerance)
