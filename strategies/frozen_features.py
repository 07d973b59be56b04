"""Frozen-feature transfer: a linear probe on the pretrained Conv-4 (Chen et al. 2019, "A Closer Look
at Few-shot Classification", Baseline; Tian et al. 2020, "Rethinking Few-Shot Image Classification").

Episode phase: multinomial logistic regression on L2-normalised frozen features, fitted with L-BFGS to
convergence (gradient tolerance), with scikit-learn's L2 penalty convention (``C`` is the inverse
strength). Features of every image the episodes use are computed once, in eval mode.

With ``robust_eval`` the queries are also attacked with L-infinity PGD (strategies/pgd.py) through the
frozen backbone and the episode's fitted probe, and the logits on the attacked queries are returned as
"robust" (the harness reports ``robust_accuracy``). Query labels are never seen: the attack pushes away
from the probe's clean prediction (Kurakin et al. 2017's label-leak-free choice), so an attacked query
counts as correct when the prediction stays on its (correct) class. Off by default: each attack step is
a forward/backward pass through the backbone for every query of every episode (at the quick preset, 3
steps cost about as much per row as the supervised pretraining itself on a 2-core CPU).
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
from strategies.pgd import PGD, RobustEval, pgd_attack
from strategies.supervised import SupervisedPretraining


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, classes: int, C: float, max_iter: int,
                            tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + ||W||^2 / (2 C n) in float64; return weights and bias."""
    x = x.double()
    w = torch.zeros(classes, x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    b = torch.zeros(classes, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tolerance,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + (w * w).sum() / (2 * C * len(x))
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return w.detach(), b.detach()


def fit_probe(support: torch.Tensor, labels: torch.Tensor, ways: int, C: float, max_iter: int,
              tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The probe (float64 weights, bias) on L2-normalised support features."""
    return fit_logistic_regression(F.normalize(support, dim=1), labels, ways, C, max_iter, tolerance)


def apply_probe(query: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(query, dim=1).double() @ w.T + b).float()


def probe_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, C: float,
                 max_iter: int, tolerance: float) -> torch.Tensor:
    return apply_probe(query, *fit_probe(support, labels, ways, C, max_iter, tolerance))


def attack_probes(model: nn.Module, queries: torch.Tensor, heads: Sequence[tuple[torch.Tensor, torch.Tensor]],
                  clean: Sequence[torch.Tensor], attack: PGD, seed: int) -> list[torch.Tensor]:
    """PGD on each episode's queries (B, q, 3, H, W) through the frozen backbone and its probe (w, b),
    at the clean predictions; returns the logits on the attacked queries, batched over the B episodes."""
    batch, q = queries.shape[:2]
    w = torch.stack([h[0] for h in heads]).float()  # (B, ways, D)
    b = torch.stack([h[1] for h in heads]).float()

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(model.features(x), dim=1).view(batch, q, -1)
        return torch.baddbmm(b[:, None], feats, w.transpose(1, 2)).flatten(0, 1)

    generator = torch.Generator(device=queries.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        adv = pgd_attack(logits_fn, queries.flatten(0, 1), torch.cat([c.argmax(1) for c in clean]), attack,
                         generator=generator)
        with torch.no_grad():
            feats = embed(model, adv).view(batch, q, -1)
    finally:
        model.train(was_training)
    return [apply_probe(f, *h) for f, h in zip(feats, heads, strict=True)]


@register
@dataclass
class FrozenFeatures(Strategy, RobustEval):
    """Linear probe (logistic regression) on L2-normalised frozen features of the pretrained Conv-4."""

    episode_phase = "linear probe, L-BFGS to convergence"

    source: SupervisedPretraining = field(default_factory=SupervisedPretraining)
    C: float = 10.0
    max_iter: int = 1000
    tolerance: float = 1e-6

    def protocol_settings(self) -> dict:
        return self.robust_settings()

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor | dict[str, torch.Tensor]:
        feats = embed(model, torch.cat([task.support_images, task.query_images]))
        n = len(task.support_index)
        head = fit_probe(feats[:n], task.support_labels, task.ways, self.C, self.max_iter, self.tolerance)
        logits = apply_probe(feats[n:], *head)
        if not self.robust_eval:
            return logits
        robust = attack_probes(model, task.query_images[None], [head], [logits], self.attack(), task.seed)
        return {"logits": logits, "robust": robust[0]}

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = lambda n: None) -> list:
        if not tasks:
            return []
        pool = tasks[0].pool
        used = torch.unique(torch.cat([torch.cat([t.support_index, t.query_index]) for t in tasks]))
        feats = torch.empty(len(pool), embed(model, pool[:1]).shape[1], device=pool.device)
        feats[used] = embed(model, pool[used])
        chunk = max(1, 1000 // len(tasks[0].query_index)) if self.robust_eval else len(tasks)
        outputs: list = []
        for i in range(0, len(tasks), chunk):
            heads, logits = [], []
            for t in tasks[i:i + chunk]:
                heads.append(fit_probe(feats[t.support_index], t.support_labels, t.ways, self.C, self.max_iter,
                                       self.tolerance))
                logits.append(apply_probe(feats[t.query_index], *heads[-1]))
                if not self.robust_eval:
                    progress(1)
            if not self.robust_eval:
                outputs += logits
                continue
            queries = pool[torch.stack([t.query_index for t in tasks[i:i + chunk]])]
            robust = attack_probes(model, queries, heads, logits, self.attack(), tasks[i].seed)
            outputs += [{"logits": c, "robust": r} for c, r in zip(logits, robust, strict=True)]
            progress(len(heads))
        return outputs
