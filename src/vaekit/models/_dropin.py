"""Parts of an existing VAE used as they are: methods as modules, and the decoder's last layer.

:class:`vaekit.VAE` takes ``model.encode`` / ``model.decode`` of a user's own VAE (the
PyTorch example's, Pyro's) and checks the one thing about a decoder that can be seen
without running it: an ``nn.Sequential`` ending in a sigmoid or softmax while the
likelihood expects logits.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["as_module", "check_decoder_output", "last_layer"]


class BoundMethod(nn.Module):
    """``owner.<name>(*args)`` as a module: ``owner``'s parameters are this module's.

    ``model.encode`` and ``model.decode`` of one VAE share ``owner``; ``parameters()``
    lists each parameter once.
    """

    def __init__(self, owner: nn.Module, name: str):
        super().__init__()
        self.owner, self.name = owner, name

    def forward(self, *args):
        return getattr(self.owner, self.name)(*args)

    def extra_repr(self) -> str:
        return f"method={type(self.owner).__name__}.{self.name}"


def as_module(arg: str, part: Callable) -> nn.Module:
    """``part`` if it is an ``nn.Module``; a method of a module wrapped in :class:`BoundMethod`."""
    if isinstance(part, nn.Module):
        return part
    owner = getattr(part, "__self__", None)
    if isinstance(owner, nn.Module) and callable(part):
        return BoundMethod(owner, part.__name__)
    raise ValueError(
        f"{arg} must be an nn.Module or a method of one (e.g. model.encode of your own VAE, so "
        f"that its parameters are trained); received {type(part).__name__} {part!r:.80}"
    )


def last_layer(module: nn.Module) -> nn.Module:
    """The module an ``nn.Sequential`` ends in (recursively); any other module as it is."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return module


def check_decoder_output(decoder: nn.Module, likelihood: nn.Module) -> None:
    """Refuse a decoder ending in a sigmoid/softmax when ``likelihood`` reads logits.

    Structural only (the last layer of an ``nn.Sequential``); values are never used to guess.
    """
    from vaekit.likelihoods import Bernoulli, Categorical, ContinuousBernoulli

    last = last_layer(decoder)
    name = type(likelihood).__name__
    if isinstance(last, nn.Sigmoid) and isinstance(likelihood, Bernoulli | ContinuousBernoulli):
        if getattr(likelihood, "probs", False):
            return
        fix = "Bernoulli(probs=True)" if isinstance(likelihood, Bernoulli) else None
        fix = f"use likelihood={fix} or remove the sigmoid" if fix else "remove the sigmoid"
        raise ValueError(
            f"decoder must output logits for {name}(); received a decoder ending in "
            f"nn.Sigmoid (probabilities): {fix}"
        )
    if isinstance(last, nn.Softmax) and isinstance(likelihood, Categorical):
        if getattr(likelihood, "probs", False):
            return
        raise ValueError(
            f"decoder must output logits for Categorical({likelihood.bins}); received a decoder "
            f"ending in nn.Softmax (probabilities): use likelihood=Categorical("
            f"{likelihood.bins}, probs=True) or remove the softmax"
        )
