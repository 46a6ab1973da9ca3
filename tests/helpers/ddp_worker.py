"""Train a tiny VAE in this process (alone or as one torchrun rank) and save its parameters.

Usage: python ddp_worker.py OUT_DIR [OBJECTIVE [KEY=VALUE ...]]   (or under torchrun; each rank
writes OUT_DIR/rank{r}.pt, and OUT_DIR/objective{r}.pt for an objective with state, e.g.
factor_vae). KEY=VALUE pairs are config overrides; ``n_train=N`` sets the training set size.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vaekit.config import RunConfig
from vaekit.data import from_tensor
from vaekit.models.build import build_model, build_objective
from vaekit.training.trainer import Trainer, wrap_distributed


def main(out: Path, objective: str = "elbo", *pairs: str) -> None:
    extra = dict(p.split("=", 1) for p in pairs)
    n_train = int(extra.pop("n_train", 80))
    torch.set_num_threads(1)
    if "RANK" in __import__("os").environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    cfg = RunConfig().replace(
        network="mlp", hidden=(16,), latent_dim=3, epochs=2, batch_size=20, lr=1e-2,
        tensorboard=False, log_every=1000, objective=objective, **extra,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    splits = from_tensor(
        torch.rand(n_train, 12, generator=g), torch.rand(20, 12, generator=g), binarize="static"
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    # a near-deterministic posterior (sigma ~ 5e-5): the reparameterisation noise, which no
    # two process layouts can draw alike, then barely moves the parameters
    last = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight[3:].zero_()
        last.bias[3:].fill_(-20.0)
    loss = build_objective(cfg.objective, latent_dim=cfg.model.latent_dim, dataset_size=n_train)
    trainer = Trainer(wrap_distributed(model), loss, splits, cfg,
                      out / "run" if rank == 0 else None, progress=False)  # fmt: skip
    trainer.fit()
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    if isinstance(loss, torch.nn.Module):
        torch.save(loss.state_dict(), out / f"objective{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:])
