"""The linear probe on frozen features (Chen et al. 2019, "A Closer Look at Few-shot Classification",
Baseline; Tian et al. 2020, "Rethinking Few-Shot Image Classification").

Episode phase: multinomial logistic regression on L2-normalised frozen features, fitted with L-BFGS to
convergence (gradient tolerance), with scikit-learn's L2 penalty convention (``C`` is the inverse
strength). Features of every image the episodes use are computed once, in eval mode, and
``episode_batch`` independent probes are fitted at once.

With ``robust_eval`` the queries are also attacked with L-infinity PGD (strategies/pgd.py) through the
frozen backbone and the episode's fitted probe, and the logits on the attacked queries are returned as
"robust". Query labels are never seen: the attack pushes away from the probe's clean prediction. Off by
default: each attack step is a forward/backward pass through the backbone for every query of every
episode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.episodes import TaskBatch
from harness.phases import Adapter, Pretrainer, Progress, no_progress
from strategies.features import embed
from strategies.pgd import PGD, RobustEval, episode_uniform, pgd_attack


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, max_iter: int,
                            tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit B independent problems at once: x (B, n, d), y (B, n) -> weights (B, classes, d), bias (B, classes).

    Each problem minimises mean cross-entropy + ||W||^2 / (2 C n) (scikit-learn's penalty, rescaled),
    in float64. The problems are independent, so L-BFGS on their sum converges to every problem's own
    optimum; it stops when the largest gradient entry is below ``tolerance``.
    """
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


def fit_probe(support: torch.Tensor, labels: torch.Tensor, ways: int, C: float, max_iter: int,
              tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Probes (float64 weights (B, ways, d), bias (B, ways)) on L2-normalised support features (B, n, d)."""
    return fit_logistic_regression(F.normalize(support, dim=-1), labels, ways, C, max_iter, tolerance)


def apply_probe(query: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Query features (B, q, d) -> (B, q, ways) logits."""
    return torch.baddbmm(b.unsqueeze(1), F.normalize(query, dim=-1).double(), w.transpose(1, 2)).float()


def attack_probes(model: nn.Module, queries: torch.Tensor, w: torch.Tensor, b: torch.Tensor, clean: torch.Tensor,
                  attack: PGD, seeds: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PGD on each episode's queries (B, q, 3, H, W) through the frozen backbone and its probe, at the clean
    predictions (B, q, ways); returns the logits on the attacked queries (B, q, ways). Each episode's
    random start comes from its own seed."""
    batch, q = queries.shape[:2]
    wf, bf = w.float(), b.float()

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(model.features(x), dim=1).view(batch, q, -1)
        return torch.baddbmm(bf[:, None], feats, wf.transpose(1, 2)).flatten(0, 1)

    start = episode_uniform(seeds, queries.shape[1:], queries.device).flatten(0, 1)
    was_training = model.training
    model.eval()
    try:
        adv = pgd_attack(logits_fn, queries.flatten(0, 1), clean.argmax(-1).flatten(), attack, mean=mean, std=std,
                         start=start)
    finally:
        model.train(was_training)
    return apply_probe(embed(model, adv).view(batch, q, -1), w, b)


@dataclass
class LinearProbe(Adapter, RobustEval):
    """Linear probe: logistic regression on L2-normalised frozen features."""

    C: float = 10.0
    max_iter: int = 1000
    tolerance: float = 1e-6
    episode_batch: int = 100  # probes fitted together (speed only; each converges to its own optimum)

    def describe(self, source: Pretrainer) -> str:
        return f"linear probe (C={self.C:g}), L-BFGS to max |gradient| < {self.tolerance:g}"

    def settings(self, source: Pretrainer) -> dict:
        return self.robust_settings()

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer,
              progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        feats = embed(model, tasks.images)
        size = min(self.episode_batch, max(1, 1000 // tasks.queries_per_episode)) if self.robust_eval \
            else self.episode_batch
        outputs: list = []
        for chunk in tasks.chunks(size):
            w, b = fit_probe(feats[chunk.support], chunk.support_labels, tasks.ways, self.C, self.max_iter,
                             self.tolerance)
            logits = apply_probe(feats[chunk.query], w, b)
            if not self.robust_eval:
                outputs += list(logits)
            else:
                robust = attack_probes(model, tasks.images[chunk.query], w, b, logits, self.attack(), chunk.seeds,
                                       tasks.mean, tasks.std)
                outputs += [{"logits": c, "robust": r} for c, r in zip(logits, robust, strict=True)]
            progress(len(chunk))
        return outputs
