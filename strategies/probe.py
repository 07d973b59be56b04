"""The linear probe on frozen features (Chen et al. 2019, "A Closer Look at Few-shot Classification",
Baseline; Tian et al. 2020, "Rethinking Few-Shot Image Classification").

Episode phase: multinomial logistic regression on L2-normalised frozen features, solved to convergence
(gradient tolerance) with scikit-learn's L2 penalty convention (``C`` is the inverse strength) by
Newton's method in the span of the support features (strategies/logistic.py), each episode on its own.
Features of every image the episodes use are computed once, in eval mode, and ``episode_batch``
probes are fitted in one batched call.

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
from harness.errors import UsageError
from harness.phases import Adapter, Pretrainer, Progress, no_progress
from harness.tuning import tunable
from strategies.features import embed
from strategies.logistic import fit_logistic_regression
from strategies.pgd import PGD, RobustEval, episode_uniform, pgd_attack


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
class ProbeSettings:
    """The probe's hyperparameters, shared by every probe row (PyTorch, its Keras twin, the external Keras row)."""

    C: float = tunable(10.0, 1e-2, 1e3, log=True)  # inverse L2 strength (scikit-learn's C)
    max_iter: int = 100  # Newton iterations (about ten suffice); L-BFGS iterations for problems too large for Newton
    tolerance: float = 1e-6
    episode_batch: int = 100  # probes fitted in one batched call (speed only: each is solved on its own)

    def check(self, source: Pretrainer) -> None:
        if self.C <= 0 or self.max_iter < 1 or self.tolerance <= 0 or self.episode_batch < 1:
            raise UsageError(f"need C > 0, max_iter >= 1, tolerance > 0 and episode_batch >= 1 (got {self.C:g}, "
                             f"{self.max_iter}, {self.tolerance:g}, {self.episode_batch})")


@dataclass
class LinearProbe(ProbeSettings, Adapter, RobustEval):
    """Linear probe: logistic regression on L2-normalised frozen features."""

    def describe(self, source: Pretrainer) -> str:
        return f"linear probe (C={self.C:g}), Newton to max |gradient| < {self.tolerance:g}"

    def settings(self, source: Pretrainer) -> dict:
        return self.robust_settings()

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor:
        return embed(model, images)

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer,
              progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        feats = self.features(model, tasks, source)
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
