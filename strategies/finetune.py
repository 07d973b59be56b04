"""Partial fine-tuning (Yosinski et al. 2014, "How transferable are features in deep neural networks?";
Chen et al. 2019's fine-tuned Baseline): a new linear head plus the last ``unfrozen_blocks`` backbone
blocks are trained on the support set with Adam; earlier blocks stay frozen. By default the head starts
from the converged linear probe on the frozen, L2-normalised features (LP-FT, Kumar et al. 2022,
"Fine-Tuning can Distort Pretrained Features"), which on the quick preset beat a random head by about
2 points at 1 and 5 shots (100 episodes, CIFAR-10 JPEG q75 copy). ``robust_eval``: strategies/pgd.py.

The frozen prefix is run once per image, in eval mode. BatchNorm layers of the fine-tuned blocks keep
using the pretrained running statistics (inductive: queries never influence each other) while their
affine weights are trained. The cached model is never modified: each episode trains its own copy of
the parameters, and ``episode_batch`` episodes are trained at once with ``torch.func.vmap`` (the same
arithmetic as one episode at a time, batched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from harness.episodes import TaskBatch
from harness.errors import UsageError
from harness.phases import Adapter, Pretrainer, Progress, no_progress
from harness.tuning import tunable
from strategies.features import embed
from strategies.pgd import RobustEval, episode_uniform, pgd_attack
from strategies.probe import ProbeSettings, fit_probe


def adam_step(params: dict, grads: dict, state: dict, step: int, lrs: dict[str, float], weight_decay: float,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict:
    """One Adam step (L2 weight decay added to the gradient, as torch.optim.Adam) on batched tensors."""
    b1, b2 = betas
    out = {}
    for k, p in params.items():
        g = grads[k] + weight_decay * p
        m, v = state.setdefault(k, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[k] = (m, v)
        m_hat, v_hat = m / (1 - b1**step), v / (1 - b2**step)
        out[k] = p - lrs[k] * m_hat / (v_hat.sqrt() + eps)
    return out


@dataclass
class FinetuneSettings:
    """The hyperparameters of partial fine-tuning, shared by the PyTorch adapter and its Keras twin
    (strategies/keras_transfer.py), so the two cannot drift apart."""

    unfrozen_blocks: int = 1
    steps: int = tunable(50, 10, 100, integer=True)
    lr: float = tunable(1e-4, 1e-5, 1e-2, log=True)  # the unfrozen blocks'
    head_lr: float = tunable(1e-3, 1e-4, 1e-1, log=True)
    weight_decay: float = 1e-4
    head_init: Literal["probe", "random"] = "probe"  # probe: LP-FT (Kumar et al. 2022)
    probe_C: float = ProbeSettings.C  # the probe's inverse L2 strength when head_init = "probe" (the probe's default)
    episode_batch: int = 50  # episodes trained at once: memory vs speed (results equal up to rounding)

    framework = ""  # shown before the description ("Keras ")

    def check(self, source: Pretrainer) -> None:
        if not 1 <= self.unfrozen_blocks <= 4:
            raise UsageError(f"unfrozen_blocks must be 1..4, got {self.unfrozen_blocks}")
        if self.steps < 0 or self.episode_batch < 1 or self.probe_C <= 0:
            raise UsageError(f"need steps >= 0, episode_batch >= 1 and probe_C > 0 (got {self.steps}, "
                             f"{self.episode_batch}, {self.probe_C:g})")

    def describe(self, source: Pretrainer) -> str:
        head = "probe-initialised (LP-FT)" if self.head_init == "probe" else "random"
        return (f"{self.framework}fine-tune {head} head + last {self.unfrozen_blocks} block(s), Adam {self.steps} "
                f"steps (lr {self.lr:g}, head {self.head_lr:g})")

    def settings(self, source: Pretrainer) -> dict:
        return {"unfrozen blocks": self.unfrozen_blocks, "steps": self.steps, "BN": "inductive"}


@dataclass
class PartialFinetune(FinetuneSettings, Adapter, RobustEval):
    """Partial fine-tuning: a new head plus the last block(s) trained on the support set, the rest frozen."""

    def settings(self, source: Pretrainer) -> dict:
        return {**super().settings(source), **self.robust_settings()}

    def fine_tune(self, model: nn.Module, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                  ways: int, seeds: Sequence[int], query_images: torch.Tensor | None = None,
                  mean: Sequence[float] = (), std: Sequence[float] = ()) -> list:
        """Fine-tune B episodes at once: support/query (B, n|q, ...) prefix features, labels (B, n). Returns
        B logits (q, ways), or with ``query_images`` (B, q, 3, H, W) B dicts with "logits" and "robust"."""
        stop = len(model.blocks) - self.unfrozen_blocks
        tail = model.tail(stop)
        buffers = {k: v.detach() for k, v in tail.named_buffers()}
        batch = len(seeds)
        params = {f"tail.{k}": v.detach().unsqueeze(0).repeat(batch, *[1] * v.dim())
                  for k, v in tail.named_parameters()}
        was_training = model.training
        model.eval()  # BatchNorm uses the pretrained running statistics throughout
        try:
            if self.head_init == "probe":  # LP-FT: start from the converged linear probe
                with torch.no_grad():
                    feats = tail(support.flatten(0, 1)).view(batch, support.shape[1], -1)
                # each episode's probe is solved on its own (strategies/logistic.py): Adam's first steps from the
                # optimum follow the sign of the leftover gradient, which so depends on the episode alone
                w, b = fit_probe(feats, labels, ways, self.probe_C, ProbeSettings.max_iter, ProbeSettings.tolerance)
            else:  # the head's initialisation depends on the episode's seed only
                heads = []
                for seed in seeds:
                    torch.manual_seed(seed)
                    heads.append(nn.Linear(model.feature_dim, ways).to(support.device))
                w, b = (torch.stack([getattr(h, k).detach() for h in heads]) for k in ("weight", "bias"))
            params["head.weight"], params["head.bias"] = w.float(), b.float()
            lrs = {k: self.head_lr if k.startswith("head.") else self.lr for k in params}

            def logits_of(p: dict, x: torch.Tensor) -> torch.Tensor:
                tail_params = {k[len("tail."):]: v for k, v in p.items() if k.startswith("tail.")}
                feats = F.normalize(functional_call(tail, (tail_params, buffers), (x,)), dim=1)
                return feats @ p["head.weight"].T + p["head.bias"]

            def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return F.cross_entropy(logits_of(p, x), y)

            batched_grad = vmap(grad(loss))
            state: dict = {}
            with torch.enable_grad():
                for step in range(1, self.steps + 1):
                    params = adam_step(params, batched_grad(params, support, labels), state, step, lrs,
                                       self.weight_decay)
            with torch.no_grad():
                logits = vmap(logits_of)(params, query)
            if query_images is None:
                return list(logits)

            def attacked(x: torch.Tensor) -> torch.Tensor:  # (B*q, 3, H, W) -> (B*q, ways)
                return vmap(logits_of)(params, model.features(x, 0, stop).view(query.shape)).flatten(0, 1)

            start = episode_uniform(seeds, query_images.shape[1:], query.device).flatten(0, 1)
            adv = pgd_attack(attacked, query_images.flatten(0, 1), logits.argmax(-1).flatten(), self.attack(),
                             mean=mean, std=std, start=start)
            with torch.no_grad():
                robust = attacked(adv).view_as(logits)
            return [{"logits": c, "robust": r} for c, r in zip(logits, robust, strict=True)]
        finally:
            model.train(was_training)

    def frozen_features(self, model: nn.Module, images: torch.Tensor, source: Pretrainer) -> torch.Tensor:
        """The frozen blocks' output (eval mode)."""
        if self.unfrozen_blocks > len(model.blocks):
            raise UsageError(f"unfrozen_blocks={self.unfrozen_blocks} exceeds the {len(model.blocks)} blocks "
                             f"of the {source.backbone} backbone")
        return embed(model, images, stop=len(model.blocks) - self.unfrozen_blocks)

    def adapt(self, model: nn.Module, tasks: TaskBatch, source: Pretrainer,
              progress: Progress = no_progress) -> list:
        if not len(tasks):
            return []
        prefix = self.features(model, tasks, source)
        outputs: list = []
        for chunk in tasks.chunks(self.episode_batch):
            outputs += self.fine_tune(model, prefix[chunk.support], chunk.support_labels, prefix[chunk.query],
                                      tasks.ways, chunk.seeds,
                                      tasks.images[chunk.query] if self.robust_eval else None,
                                      tasks.mean, tasks.std)
            progress(len(chunk))
        return outputs
