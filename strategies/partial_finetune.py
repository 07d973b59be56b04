"""Partial fine-tuning (Yosinski et al. 2014, "How transferable are features in deep neural networks?";
Chen et al. 2019's fine-tuned Baseline): a new linear head plus the last ``unfrozen_blocks`` Conv-4
blocks are trained on the support set with Adam; earlier blocks stay frozen.

The frozen prefix is run once per image, in eval mode. BatchNorm layers of the fine-tuned blocks keep
using the pretrained running statistics (inductive: queries never influence each other) while their
affine weights are trained. The cached model is never modified: each episode trains its own copy of
the parameters, and ``episode_batch`` episodes are trained at once with ``torch.func.vmap`` (the same
arithmetic as one episode at a time, batched). ``robust_eval``: see strategies/pgd.py (off by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from harness.episodes import Task
from harness.errors import UsageError
from harness.registry import register
from harness.strategy import Strategy
from strategies.backbones import FEATURE_DIM, embed
from strategies.pgd import RobustEval, pgd_attack
from strategies.supervised import SupervisedPretraining


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


@register
@dataclass
class PartialFinetune(Strategy, RobustEval):
    """New head plus the last conv block(s) fine-tuned on the support set, the rest frozen."""

    episode_phase = "fine-tune head + last block(s), Adam"

    source: SupervisedPretraining = field(default_factory=SupervisedPretraining)
    unfrozen_blocks: int = 1
    steps: int = 100
    lr: float = 1e-3
    head_lr: float = 1e-2
    weight_decay: float = 1e-4
    episode_batch: int = 50  # episodes trained at once: memory vs speed (results equal up to rounding)

    def check(self) -> None:
        if not 1 <= self.unfrozen_blocks <= 4:
            raise UsageError(f"partial-finetune.unfrozen_blocks must be 1..4, got {self.unfrozen_blocks}")

    def protocol_settings(self) -> dict:
        return {"unfrozen blocks": self.unfrozen_blocks, "steps": self.steps, "BN": "inductive",
                **self.robust_settings()}

    def adapt(self, model: nn.Module, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
              ways: int, seeds: Sequence[int], query_images: torch.Tensor | None = None) -> torch.Tensor:
        """Fine-tune B episodes at once. support (B, n, ...) prefix features, labels (B, n) -> (B, q, ways);
        with ``query_images`` (B, q, 3, H, W) also attack them: (B, 2, q, ways), clean then robust."""
        blocks = model.blocks[len(model.blocks) - self.unfrozen_blocks:]
        buffers = {k: v.detach() for k, v in blocks.named_buffers()}
        batch = len(seeds)
        params = {f"blocks.{k}": v.detach().unsqueeze(0).repeat(batch, *[1] * v.dim())
                  for k, v in blocks.named_parameters()}
        heads = []
        for seed in seeds:  # the head's initialisation depends on the episode's seed only
            torch.manual_seed(seed)
            heads.append(nn.Linear(FEATURE_DIM, ways).to(support.device))
        params["head.weight"] = torch.stack([h.weight.detach() for h in heads])
        params["head.bias"] = torch.stack([h.bias.detach() for h in heads])
        lrs = {k: self.head_lr if k.startswith("head.") else self.lr for k in params}

        def logits_of(p: dict, x: torch.Tensor) -> torch.Tensor:
            block_params = {k[len("blocks."):]: v for k, v in p.items() if k.startswith("blocks.")}
            feats = functional_call(blocks, (block_params, buffers), (x,)).flatten(1)
            return feats @ p["head.weight"].T + p["head.bias"]

        def loss(p: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits_of(p, x), y)

        batched_grad = vmap(grad(loss))
        state: dict = {}
        was_training = model.training
        model.eval()  # BatchNorm uses the pretrained running statistics
        try:
            with torch.enable_grad():
                for step in range(1, self.steps + 1):
                    params = adam_step(params, batched_grad(params, support, labels), state, step, lrs,
                                       self.weight_decay)
            with torch.no_grad():
                logits = vmap(logits_of)(params, query)
            if query_images is None:
                return logits

            def attacked(x: torch.Tensor) -> torch.Tensor:  # (B*q, 3, H, W) -> (B*q, ways)
                prefix = model.features(x, 0, len(model.blocks) - self.unfrozen_blocks).view(query.shape)
                return vmap(logits_of)(params, prefix).flatten(0, 1)

            adv = pgd_attack(attacked, query_images.flatten(0, 1), logits.argmax(-1).flatten(), self.attack(),
                             generator=torch.Generator(device=query.device).manual_seed(seeds[0]))
            with torch.no_grad():
                return torch.stack([logits, attacked(adv).view_as(logits)], 1)
        finally:
            model.train(was_training)

    def _prefix(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return embed(model, images, stop=len(model.blocks) - self.unfrozen_blocks)

    def _outputs(self, out: torch.Tensor) -> list:
        return [{"logits": o[0], "robust": o[1]} for o in out] if self.robust_eval else list(out)

    def run_episode(self, model: nn.Module, task: Task) -> torch.Tensor | dict[str, torch.Tensor]:
        n = len(task.support_index)
        prefix = self._prefix(model, torch.cat([task.support_images, task.query_images]))
        images = task.query_images[None] if self.robust_eval else None
        return self._outputs(self.adapt(model, prefix[None, :n], task.support_labels[None], prefix[None, n:],
                                        task.ways, [task.seed], images))[0]

    def run_episodes(self, model: nn.Module, tasks: Sequence[Task],
                     progress: Callable[[int], None] = lambda n: None) -> list:
        if not tasks:
            return []
        pool = tasks[0].pool
        used = torch.unique(torch.cat([torch.cat([t.support_index, t.query_index]) for t in tasks]))
        prefix = torch.empty(len(pool), *self._prefix(model, pool[:1]).shape[1:], device=pool.device)
        prefix[used] = self._prefix(model, pool[used])
        logits: list[torch.Tensor] = []
        for i in range(0, len(tasks), self.episode_batch):
            chunk = tasks[i:i + self.episode_batch]
            out = self.adapt(model, prefix[torch.stack([t.support_index for t in chunk])],
                             torch.stack([t.support_labels for t in chunk]),
                             prefix[torch.stack([t.query_index for t in chunk])], chunk[0].ways,
                             [t.seed for t in chunk],
                             pool[torch.stack([t.query_index for t in chunk])] if self.robust_eval else None)
            logits += self._outputs(out)
            progress(len(chunk))
        return logits
