"""Multi-task loss balancing: how the SR/interpolation and segmentation losses are combined.

All learnable weightings use log-variance parameters ``s_t`` so the combined loss is bounded
below (``exp(-s) * L + s >= 1 + log L`` for ``L > 0``) and the weights stay positive.

* :class:`FixedWeighting` -- constant weights (the ablation baseline).
* :class:`KendallWeighting` -- Kendall, Gal & Cipolla (CVPR 2018) homoscedastic uncertainty,
  ``sum_t 0.5 * exp(-s_t) * L_t + 0.5 * s_t`` (SwinSR-UNETR, section "loss function").
* :class:`DynamicWeighting` -- TASC-SwinMT's learnable dynamic loss in the bounded form
  ``sum_t exp(-s_t) * L_t + s_t``.  The paper prints ``- s_t``, which lets the total loss go to
  minus infinity by growing ``s_t``; we use ``+ s_t`` (see docs/models.md).

GradNorm and DWA live next to these (added with TASC-SwinMT) because they need training state:

* :class:`GradNormWeighting` -- Chen et al. (ICML 2018); weights trained by the gradient-norm loss on
  the last shared layer, renormalised to sum to the number of tasks.
* :class:`DWAWeighting` -- Liu et al. (CVPR 2019) dynamic weight average from the ratio of the last
  two epochs' mean losses, temperature ``T = 2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class FixedWeighting(nn.Module):
    """``sum_t w_t * L_t`` with constant weights."""

    def __init__(self, weights: Sequence[float]):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(list(weights), dtype=torch.float32))

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(w * l for w, l in zip(self.weights, losses, strict=True))

    def task_weights(self) -> torch.Tensor:
        return self.weights.detach().clone()


class _LogVarianceWeighting(nn.Module):
    """Shared machinery: one learnable log-variance per task, clamped for numerical safety."""

    scale: float = 1.0

    def __init__(self, num_tasks: int, init_log_var: float = 0.0, clamp: float = 10.0):
        super().__init__()
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init_log_var)))
        self.clamp = clamp

    def _s(self) -> torch.Tensor:
        return self.log_vars.clamp(-self.clamp, self.clamp)

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        s = self._s()
        if len(losses) != s.numel():
            raise ValueError(f"expected {s.numel()} task losses, got {len(losses)}")
        stacked = torch.stack([l.reshape(()) for l in losses])
        return (self.scale * (torch.exp(-s) * stacked + s)).sum()

    def task_weights(self) -> torch.Tensor:
        """The effective multiplier of each task loss (for logging)."""
        return (self.scale * torch.exp(-self._s())).detach()


class KendallWeighting(_LogVarianceWeighting):
    """Kendall et al. uncertainty weighting: ``0.5 * exp(-s_t) * L_t + 0.5 * s_t``."""

    scale = 0.5


class DynamicWeighting(_LogVarianceWeighting):
    """TASC-SwinMT learnable dynamic weighting, bounded form ``exp(-s_t) * L_t + s_t``."""

    scale = 1.0


class GradNormWeighting(nn.Module):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018), TASC-SwinMT section 4.6 ablation.

    Why: balances tasks by making each weighted task's gradient norm at the last shared layer ``W``
    track the mean norm, scaled by the task's relative inverse training rate ``r_i ** alpha``.
    The weights are trained only by ``L_grad`` (the total loss uses them detached) and renormalised
    to sum to the number of tasks after every optimizer step, so they stay positive and bounded.

    Training loop::

        losses = [l_interp, l_seg]
        total = weighting(losses)                                   # sum_i w_i L_i (w detached)
        weighting.update_gradients(losses, model.shared_parameters())  # sets weighting.weights.grad
        total.backward()
        optimizer.step()                                            # optimizer holds weighting.weights
        weighting.renormalize()
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, min_weight: float = 1e-3):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(num_tasks))
        self.alpha = alpha
        self.min_weight = min_weight
        self.register_buffer("initial_losses", torch.zeros(num_tasks))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(losses) != self.weights.numel():
            raise ValueError(f"expected {self.weights.numel()} task losses, got {len(losses)}")
        w = self.weights.detach()
        return sum(w[i] * l.reshape(()) for i, l in enumerate(losses))

    def gradnorm_loss(
        self, losses: Sequence[torch.Tensor], shared_parameters: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``L_grad = sum_i |G_i - mean_j(G_j) * r_i**alpha|``, ``G_i = w_i ||grad_W L_i||``, target constant.

        Differentiable with respect to ``self.weights`` only; keeps the graph of ``losses`` alive.
        """
        params = [p for p in shared_parameters if p.requires_grad]
        norms = []
        for loss in losses:
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            sq = sum((g.detach() ** 2).sum() for g in grads if g is not None)
            norms.append(torch.sqrt(torch.as_tensor(sq, dtype=torch.float32, device=self.weights.device)))
        norms_t = torch.stack(norms)
        current = torch.stack([l.detach().reshape(()).float() for l in losses])
        if not bool(self.initialized):
            self.initial_losses.copy_(current)
            self.initialized.fill_(True)
        ratio = current / self.initial_losses.clamp_min(1e-12)  # L_i(t) / L_i(0)
        inverse_rate = ratio / ratio.mean()
        g_w = self.weights * norms_t
        target = (g_w.mean() * inverse_rate**self.alpha).detach()
        return (g_w - target).abs().sum()

    def update_gradients(
        self, losses: Sequence[torch.Tensor], shared_parameters: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Set ``self.weights.grad`` to ``dL_grad/dw``; returns ``L_grad`` (detached) for logging."""
        l_grad = self.gradnorm_loss(losses, shared_parameters)
        (grad,) = torch.autograd.grad(l_grad, self.weights)
        self.weights.grad = grad if self.weights.grad is None else self.weights.grad + grad
        return l_grad.detach()

    @torch.no_grad()
    def renormalize(self) -> None:
        """Clamp to ``min_weight`` and rescale so the weights sum to the number of tasks."""
        self.weights.clamp_(min=self.min_weight)
        self.weights.mul_(self.weights.numel() / self.weights.sum())

    def task_weights(self) -> torch.Tensor:
        return self.weights.detach().clone()


class DWAWeighting(nn.Module):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019), TASC-SwinMT section 4.6 ablation.

    ``lambda_k(t) = K exp(w_k(t-1) / T) / sum_i exp(w_i(t-1) / T)`` with ``w_k(t-1) = L_k(t-1) / L_k(t-2)``
    the ratio of the task's mean losses over the previous two epochs; ``lambda = 1`` for the first two
    epochs. Weights are not learned by gradient: they lie in ``(0, K)`` and sum to ``K``.
    Call the module on every training step (it accumulates the epoch means while ``training``) and
    :meth:`end_epoch` after every epoch.
    """

    def __init__(self, num_tasks: int, temperature: float = 2.0):
        super().__init__()
        self.temperature = temperature
        self.register_buffer("lambdas", torch.ones(num_tasks))
        self.register_buffer("history", torch.zeros(2, num_tasks))  # [epoch t-2, epoch t-1] mean losses
        self.register_buffer("epochs_seen", torch.tensor(0))
        self.register_buffer("running_sum", torch.zeros(num_tasks))
        self.register_buffer("running_count", torch.tensor(0))

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(losses) != self.lambdas.numel():
            raise ValueError(f"expected {self.lambdas.numel()} task losses, got {len(losses)}")
        stacked = torch.stack([l.reshape(()) for l in losses])
        if self.training:
            self.running_sum += stacked.detach().to(self.running_sum)
            self.running_count += 1
        return (self.lambdas.to(stacked) * stacked).sum()

    @torch.no_grad()
    def end_epoch(self, epoch_losses: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
        """Close an epoch (its mean losses: ``epoch_losses`` or the accumulated ones); returns new lambdas."""
        if epoch_losses is not None:
            mean = torch.as_tensor(epoch_losses, dtype=torch.float32, device=self.lambdas.device)
        elif int(self.running_count) > 0:
            mean = self.running_sum / self.running_count
        else:
            raise RuntimeError("DWAWeighting.end_epoch: no losses were recorded this epoch")
        self.history[0] = self.history[1]
        self.history[1] = mean
        self.epochs_seen += 1
        self.running_sum.zero_()
        self.running_count.zero_()
        if int(self.epochs_seen) >= 2:
            rate = self.history[1] / self.history[0].clamp_min(1e-12)
            self.lambdas.copy_(rate.numel() * torch.softmax(rate / self.temperature, dim=0))
        return self.lambdas.clone()

    def task_weights(self) -> torch.Tensor:
        return self.lambdas.detach().clone()
