"""Fused forms of the two terms every ELBO step computes: one autograd node each.

The formulas are the textbook ones; only the work is arranged differently. PyTorch's own
forms build one autograd node per elementwise operation (about ten for the Gaussian KL, five
for the Bernoulli log-likelihood, each with its temporaries); here the forward pass is a few
kernels and the gradient is written out in closed form:

* ``bernoulli_logits_log_prob(l, x)``: ``sum_d x_d l_d - softplus(l_d)`` nats, gradient
  ``x - sigmoid(l)`` per logit;
* ``kl_logvar_standard(m, v)``: ``KL(N(m, e^v) || N(0, 1)) = (e^v - 1 - v + m^2) / 2`` nats per
  dimension (``e^v - 1`` as ``expm1``), gradients ``m`` and ``(e^v - 1) / 2``.

Both backward passes are made of differentiable operations (out of place when a graph of the
gradient is being built), so ``create_graph=True`` still works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bernoulli_logits_log_prob", "kl_logvar_standard"]


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``t`` summed over the axes that broadcasting added or expanded to reach its shape."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    t = t.sum(tuple(range(lead))) if lead else t
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1)
    return t.sum(dims, keepdim=True) if dims else t


class _BernoulliLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor, nd: int) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        ctx.nd = nd
        lf, xf = logits.flatten(-nd), x.flatten(-nd)
        return (lf * xf).sum(-1) - F.softplus(lf).sum(-1)  # (vecdot is slower on the CPU)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, x = ctx.saved_tensors
        g = grad.reshape(grad.shape + (1,) * ctx.nd)
        grad_logits = grad_x = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: keep every step differentiable
                grad_logits = (x - torch.sigmoid(logits)) * g
            else:  # one temporary: sigmoid(l), then (sigmoid(l) - x) * (-g) in place
                grad_logits = torch.sigmoid(logits).sub_(x).mul_(-g)
        if ctx.needs_input_grad[1]:
            grad_x = _sum_to(logits * g, x.shape)
        return grad_logits, grad_x, None


def bernoulli_logits_log_prob(logits: torch.Tensor, x: torch.Tensor, nd: int) -> torch.Tensor:
    """``log p(x | logits) = sum_d [x_d l_d - softplus(l_d)]`` over the last ``nd`` axes, nats.

    ``x`` broadcasts against ``logits`` (e.g. ``[B, D]`` against ``[S, B, D]``); minus the
    summed ``binary_cross_entropy_with_logits``, computed as two sums (of ``x l`` and of
    ``softplus(l)``), with the gradient ``x - sigmoid(l)`` in closed form.
    """
    if nd < 1:
        raise ValueError(f"nd must be >= 1 (the event axes to sum); received {nd}")
    dtype = torch.promote_types(logits.dtype, x.dtype)
    return _BernoulliLogits.apply(logits.to(dtype), x.to(dtype), nd)


class _KLLogvarStandard(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loc: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        em1 = torch.expm1(logvar)  # e^v - 1 without cancellation: the KL never rounds below 0
        ctx.save_for_backward(loc, logvar, em1)
        return (em1 - logvar + loc * loc) * 0.5

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        loc, logvar, em1 = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: e^v - 1 as a function of v
            em1 = torch.expm1(logvar)
        grad_loc = _sum_to(grad * loc, loc.shape) if ctx.needs_input_grad[0] else None
        grad_logvar = None
        if ctx.needs_input_grad[1]:
            grad_logvar = _sum_to(grad * em1 * 0.5, em1.shape)
        return grad_loc, grad_logvar


def kl_logvar_standard(loc: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(loc, e^logvar) || N(0, 1)) = (e^logvar - 1 - logvar + loc^2) / 2`` per element, nats
    (``e^v - 1`` as ``expm1(v)``, so a posterior equal to the prior gives exactly 0, never less)."""
    return _KLLogvarStandard.apply(loc, logvar)
