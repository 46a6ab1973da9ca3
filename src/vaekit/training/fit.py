"""One small Adam loop for the auxiliary models a run fits on tensors held in memory.

The code prior of a VQ-VAE, the second stage of a two-stage VAE and the perceptual feature
classifier are all trained the same way: Adam, shuffled minibatches drawn from a
``torch.Generator``, one optimiser step per minibatch. :func:`fit` is that loop, once.
(The VAE itself is trained by :class:`vaekit.training.trainer.Trainer`, which adds
checkpoints, validation and logging.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from vaekit._checks import check_count, check_positive
from vaekit._progress import progress as progress_bar

__all__ = ["fit"]

Tensors = torch.Tensor | Sequence[torch.Tensor]


def _as_tuple(name: str, data: Tensors) -> tuple[torch.Tensor, ...]:
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"{name} must be a tensor or a sequence of tensors; received {data!r}")
    n = tensors[0].shape[0] if tensors[0].dim() > 0 else 0
    if n == 0 or any(t.dim() == 0 or t.shape[0] != n for t in tensors):
        raise ValueError(
            f"{name} must hold the same non-zero number of examples along the first axis; "
            f"received shapes {[tuple(t.shape) for t in tensors]}"
        )
    return tensors


def fit(
    module: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    data: Tensors | Callable[[int], Tensors],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "fit",
    device: torch.device | str | None = None,
) -> list[float]:
    """Minimise ``loss_fn`` over ``module``'s parameters with Adam; mean loss per example per epoch.

    Each epoch draws ``order = torch.randperm(N, generator=generator)`` (the global RNG when
    ``generator`` is None) and visits ``order[i : i + batch_size]`` for ``i = 0, batch_size,
    ...`` (the last batch may be smaller). For each batch it calls ``loss_fn(*batch)`` with the
    rows of every data tensor, moved to ``device``, and takes one Adam step (learning rate
    ``lr``) on that loss.

    Args:
        module: the parameters to fit (all of ``module.parameters()``); it is put in train
            mode and its previous mode is restored afterwards.
        loss_fn: ``(*batch) -> loss``; either per example ``[B]`` (its mean over the batch is
            minimised) or a scalar, taken to be the batch mean of a per-example loss.
        data: a tensor ``[N, ...]``, a sequence of tensors with the same N, or a callable
            ``epoch -> tensors`` called at the start of every epoch (for data redrawn each
            epoch), before that epoch's permutation is drawn.
        epochs, batch_size: numbers of passes and rows per step (integers >= 1).
        generator: the random source of the batch order.
        progress: show a bar over the steps (``desc`` its label).
        device: where batches go; default the device of ``module``'s first parameter.

    Returns:
        One float per epoch: the per-example loss averaged over the epoch's N examples
        (``sum of per-example losses / N``, in the loss's own units, e.g. nats), each example's
        loss taken under the parameters of the step that used it.
    """
    check_count("epochs", epochs)
    check_count("batch_size", batch_size)
    check_positive("lr", lr)
    params = list(module.parameters())
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    opt = torch.optim.Adam(params, lr=lr)
    fixed = None if callable(data) else _as_tuple("data", data)
    history: list[float] = []
    bar = None
    was_training = module.training
    module.train()
    try:
        with torch.enable_grad():
            for epoch in range(epochs):
                tensors = fixed if fixed is not None else _as_tuple("data", data(epoch))
                n = tensors[0].shape[0]
                if bar is None:
                    steps = -(-n // batch_size)
                    bar = progress_bar(total=epochs * steps, desc=desc, enabled=progress)
                order = torch.randperm(n, generator=generator)
                total = torch.zeros((), device=device)
                for i in range(0, n, batch_size):
                    idx = order[i : i + batch_size]
                    batch = [t[idx].to(device) for t in tensors]
                    loss = loss_fn(*batch)
                    opt.zero_grad(set_to_none=True)
                    if loss.dim() == 0:
                        loss.backward()
                        total += loss.detach() * idx.shape[0]
                    else:
                        loss.mean().backward()
                        total += loss.detach().sum()  # summed on the device: no sync per step
                    opt.step()
                    bar.update(1)
                history.append(total.item() / n)
                bar.set_postfix({"epoch": epoch + 1, "loss": f"{history[-1]:.4g}"})
    finally:
        if bar is not None:
            bar.close()
        module.train(was_training)
    return history
