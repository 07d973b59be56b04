"""L-infinity projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to
Adversarial Attacks"), batched on the device, for adversarial training and robust evaluation.

Images reach models normalised with the data's channel statistics (harness/augment.py), but the threat model is
stated in pixel units: ``epsilon`` and ``step_size`` are fractions of the [0, 1] pixel range (2/255 is two
grey levels) and adversarial images stay valid pixels. So the attack runs in pixel space, projecting onto
the epsilon-ball around the clean pixels and onto [0, 1], and normalises before each model call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.augment import Stats, denormalize, normalize


@dataclass(frozen=True)
class PGD:
    """The attack's hyperparameters, in [0, 1] pixel units (defaults: see strategies/adversarial.py)."""

    epsilon: float = 2 / 255
    step_size: float = 1 / 255
    steps: int = 3


def pgd_attack(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor,
               attack: PGD, random_start: bool = True, generator: torch.Generator | None = None, *,
               mean: Stats, std: Stats, start: torch.Tensor | None = None) -> torch.Tensor:
    """Maximise the cross-entropy of ``logits_fn`` at ``labels`` within the epsilon-ball of ``x``.

    ``x`` is normalised with ``mean``/``std`` (N, 3, H, W); the result is normalised too, detached, and its
    pixels lie within ``epsilon`` of the clean ones and within [0, 1]. Computed in fp32 (autocast is off
    inside). The random start is uniform in the ball, drawn from ``generator``, or ``start`` (uniform in
    [0, 1), x's shape) when given (per-episode draws, :func:`episode_uniform`). With ``steps == 0`` the
    clean input is returned.
    """
    if attack.steps == 0 or attack.epsilon == 0:
        return x.detach()
    clean = denormalize(x.detach(), mean, std)
    delta = torch.zeros_like(clean)
    if random_start:
        noise = start if start is not None else torch.rand(clean.shape, device=clean.device, generator=generator)
        delta = (noise * 2 - 1) * attack.epsilon
    adv = (clean + delta).clamp(0, 1)
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):  # gradients in fp32 under autocast
        for _ in range(attack.steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(logits_fn(normalize(adv, mean, std)), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + attack.step_size * grad.sign()
            adv = torch.min(torch.max(adv, clean - attack.epsilon), clean + attack.epsilon).clamp(0, 1)
    return normalize(adv, mean, std).detach()


def episode_uniform(seeds: Sequence[int], shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """(len(seeds), *shape) uniform [0, 1) noise, each episode's slice drawn from its own seed alone, so an
    episode's attack never depends on the other episodes of its batch."""
    return torch.stack([torch.rand(tuple(shape), device=device,
                                   generator=torch.Generator(device=device).manual_seed(int(s))) for s in seeds])


@dataclass(kw_only=True)
class RobustEval:
    """Episode-phase fields (mixed into a Strategy) for the robust evaluation: with ``robust_eval`` the
    queries are attacked through the adapted network at its clean predictions (query labels are never
    seen) and the logits on them returned as "robust" (the harness reports ``clean_and_robust_accuracy``:
    queries right both clean and attacked). Off by default: each attack step is a forward/backward pass per
    query of every episode."""

    robust_eval: bool = False
    robust_epsilon: float = PGD.epsilon  # the attack, in [0, 1] pixel units (strategies/adversarial.py)
    robust_step_size: float = PGD.step_size
    robust_steps: int = PGD.steps

    def attack(self) -> PGD:
        return PGD(self.robust_epsilon, self.robust_step_size, self.robust_steps)

    def robust_settings(self) -> dict[str, str]:
        """For the row's settings: the attack behind ``clean_and_robust_accuracy``, when it is evaluated."""
        return {"robust eval": describe(self.attack())} if self.robust_eval else {}


def describe(attack: PGD) -> str:
    return f"PGD eps {attack.epsilon * 255:g}/255, {attack.steps} x {attack.step_size * 255:g}/255"
