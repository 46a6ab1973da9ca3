"""Tests for vaekit.training.fit: the Adam loop against closed forms and a hand-written loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaekit.training.fit import fit


def test_full_batch_least_squares_converges_to_the_lstsq_solution():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, generator=g, dtype=torch.float64)
    b = a @ torch.tensor([[1.5], [-2.0], [0.5]], dtype=torch.float64)
    b = b + 0.3 * torch.randn(64, 1, generator=g, dtype=torch.float64)
    want = torch.linalg.lstsq(a, b).solution  # [3, 1], the closed-form minimiser
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False).double()
    history = fit(
        model,
        lambda ab, bb: (model(ab) - bb).square().sum(1),  # [B] squared error per example
        (a, b),
        epochs=400,
        batch_size=64,
        lr=0.05,
        generator=torch.Generator().manual_seed(1),
    )
    torch.testing.assert_close(model.weight.detach().T, want, atol=1e-6, rtol=0)
    # the last epoch's mean loss is the least-squares residual, mean over the 64 examples
    residual = (a @ want - b).square().sum().item() / 64
    assert history[-1] == pytest.approx(residual, rel=1e-6)
    assert len(history) == 400 and history[0] > history[-1]


def test_mean_estimator_converges_to_the_sample_mean():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 3.0
    mu = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    holder = nn.Module()
    holder.mu = mu
    fit(
        holder,
        lambda xb: (xb - mu).square().sum(1).mean(),  # a scalar: the batch mean
        x,
        epochs=400,
        batch_size=50,
        lr=0.05,
    )
    torch.testing.assert_close(mu.detach(), x.mean(0), atol=1e-6, rtol=0)


def test_batches_follow_the_generator_and_the_epoch_mean_is_per_example():
    # A parameter the loss does not depend on gets zero gradients, so Adam never moves it and
    # the epoch means are exact: sum of per-example losses / N, the ragged last batch included.
    x = torch.arange(10.0).unsqueeze(1)
    module = nn.Linear(1, 1)
    seen = []

    def loss_fn(xb):
        seen.append(xb[:, 0].long().tolist())
        return xb[:, 0] + 0.0 * module.weight.sum()  # [B]

    history = fit(
        module,
        loss_fn,
        x,
        epochs=2,
        batch_size=3,
        lr=0.1,
        generator=torch.Generator().manual_seed(7),
    )
    ref = torch.Generator().manual_seed(7)
    want = []
    for _ in range(2):
        order = torch.randperm(10, generator=ref).tolist()
        want += [order[i : i + 3] for i in range(0, 10, 3)]
    assert seen == want and [len(b) for b in seen[:4]] == [3, 3, 3, 1]
    assert history == [pytest.approx(4.5), pytest.approx(4.5)]  # mean of 0..9


def test_data_redrawn_per_epoch_and_mode_restored():
    module = nn.Linear(2, 1)
    module.eval()
    epochs_asked = []

    def data(epoch):
        epochs_asked.append(epoch)
        return torch.full((4, 2), float(epoch)), torch.zeros(4)

    history = fit(
        module,
        lambda xb, yb: xb[:, 0] + 0.0 * module.weight.sum() + yb,
        data,
        epochs=3,
        batch_size=4,
        lr=1e-3,
    )
    assert epochs_asked == [0, 1, 2] and history == [0.0, 1.0, 2.0]
    assert not module.training


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"data": (torch.zeros(3, 1), torch.zeros(2))}, "same non-zero number"),
        ({"data": torch.zeros(0, 1)}, "same non-zero number"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    module = nn.Linear(1, 1)
    args = {"data": torch.zeros(3, 1), "epochs": 1, "batch_size": 2, "lr": 1e-3} | kwargs
    data = args.pop("data")
    with pytest.raises(ValueError, match=match):
        fit(module, lambda *b: module(b[0]).sum(1), data, **args)
