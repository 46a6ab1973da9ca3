"""DistributedDataParallel on CPU (gloo): two ranks stay identical and match one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.net import free_port

WORKER = Path(__file__).parent / "helpers" / "ddp_worker.py"


def _run(cmd, out, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    proc = subprocess.run(
        cmd + [str(WORKER), str(out), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_match_each_other_and_a_single_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", str(free_port())], ddp)  # fmt: skip
    _run([sys.executable], single)
    r0, r1 = (torch.load(ddp / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    one = torch.load(single / "rank0.pt", weights_only=True)
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"ranks differ in {name}"
        torch.testing.assert_close(r0[name], one[name], rtol=1e-3, atol=1e-4, msg=name)
    moved = [not torch.equal(r0[n], torch.zeros_like(r0[n])) for n in r0]
    assert all(moved)
    assert (ddp / "run" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_factor_vae_discriminator_stays_identical_across_ranks(tmp_path):
    """FactorVAE's discriminator is outside the DDP-wrapped model: its initial weights come
    from rank 0 and its gradients are averaged, so both replicas (and the model) agree."""
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
          "--master_port", str(free_port())], tmp_path, "factor_vae")  # fmt: skip
    for kind in ("rank", "objective"):
        r0, r1 = (torch.load(tmp_path / f"{kind}{r}.pt", weights_only=True) for r in (0, 1))
        for name in r0:
            if torch.is_tensor(r0[name]):
                assert torch.equal(r0[name], r1[name]), f"ranks differ in {kind} {name}"
    start = torch.load(tmp_path / "objective0.pt", weights_only=True)
    assert start["_extra_state"]["optimizer"]["state"], "the discriminator took Adam steps"
