"""Train a tiny AutoencoderKL with its discriminator as one torchrun rank; save the states.

Usage (under torchrun): python ddp_akl_worker.py OUT_DIR; each rank writes
OUT_DIR/rank{r}.pt (the model) and OUT_DIR/objective{r}.pt (discriminator + its Adam).
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from vaekit.config import RunConfig
from vaekit.data import from_tensor
from vaekit.models.build import build_model, build_objective
from vaekit.training.trainer import Trainer, wrap_distributed


def main(out: Path) -> None:
    torch.set_num_threads(1)
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    cfg = RunConfig().replace(
        model="autoencoder_kl", objective="autoencoder_kl", downsample=2, latent_channels=2,
        channels=4, disc_channels=4, disc_layers=1, disc_start=2, epochs=2, batch_size=8,
        binarize="none", tensorboard=False, log_every=1000,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    splits = from_tensor(
        torch.rand(32, 64, generator=g), torch.rand(8, 64, generator=g), image_shape=(1, 8, 8)
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, splits.image_shape, splits.event_shape)
    torch.manual_seed(rank)  # different discriminator draws: rank 0's must win
    loss = build_objective(cfg.objective, model=cfg.model, image_channels=1)
    trainer = Trainer(wrap_distributed(model), loss, splits, cfg, None, input_shape=(1, 8, 8),
                      progress=False)  # fmt: skip
    trainer.fit()
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    torch.save(loss.state_dict(), out / f"objective{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
