"""Frozen-feature transfer: a linear probe on the pretrained Conv-4 (Chen et al. 2019, "A Closer Look
at Few-shot Classification", Baseline; Tian et al. 2020, "Rethinking Few-Shot Image Classification").

Episode phase: multinomial logistic regression on L2-normalised frozen features, fitted with L-BFGS to
convergence (gradient tolerance), with scikit-learn's L2 penalty convention (``C`` is the inverse
strength). Features of every image the episodes use are computed once, in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from harness.episodes import Task
from harness.registry import register
from harness.strategy import Strategy
from strategies.backbones import embed
from strategies.supervised import SupervisedPretraining


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


def probe_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, C: float,
                 max_iter: int, tolerance: float) -> torch.Tensor:
    """Batched probe: support (B, n, d), labels (B, n), query (B, q, d) -> (B, q, ways) logits."""
    support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
    w, b = fit_logistic_regression(support, labels, ways, C, max_iter, tolerance)
    return torch.baddbmm(b.unsqueeze(1), query.double(), w.transpose(1, 2)).float()


@register
@dataclass
class FrozenFeatures(Strategy):
    """Linear probe (logistic regression) on L2-normalised frozen features of the pretrained Conv-4."""

    episode_phase = "linear probe, L-BFGS to convergence"

    source: SupervisedPretraining = field(default_factory=SupervisedPretraining)
    C: float = 10.0
    max_iter: int = 1000
    tolerance: float = 1e-6
    episode_batch: int = 100  # problems solved together (speed only; each converges to its own optimum)

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor:
        feats = embed(model, torch.cat([task.support_images, task.query_images]))
        n = len(task.support_index)
        return probe_logits(feats[None, :n], task.support_labels[None], feats[None, n:], task.ways, self.C,
                            self.max_iter, self.tolerance)[0]

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = lambda n: None) -> list[torch.Tensor]:
        if not tasks:
            return []
        pool = tasks[0].pool
        used = torch.unique(torch.cat([torch.cat([t.support_index, t.query_index]) for t in tasks]))
        feats = torch.empty(len(pool), embed(model, pool[:1]).shape[1], device=pool.device)
        feats[used] = embed(model, pool[used])
        logits: list[torch.Tensor] = []
        for i in range(0, len(tasks), self.episode_batch):
            chunk = tasks[i:i + self.episode_batch]
            out = probe_logits(feats[torch.stack([t.support_index for t in chunk])],
                               torch.stack([t.support_labels for t in chunk]),
                               feats[torch.stack([t.query_index for t in chunk])], chunk[0].ways, self.C,
                               self.max_iter, self.tolerance)
            logits += list(out)
            progress(len(chunk))
        return logits
