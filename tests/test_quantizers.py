"""Tests for vaekit.quantizers: lookup vs brute force, gradients, EMA by hand, restarts, FSQ."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import vaekit.quantizers as Q
from vaekit.quantizers import FSQ, QuantizerOutput, VectorQuantizer, code_statistics, nearest_codes


def _flat(z: torch.Tensor) -> torch.Tensor:
    return z.movedim(1, -1).reshape(-1, z.shape[1])


# ----------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("chunk_size", [None, 7, 1], ids=["auto", "chunk7", "chunk1"])
def test_lookup_equals_cdist_argmin(chunk_size):
    z, codebook = torch.randn(50, 5), torch.randn(16, 5)
    expected = torch.cdist(z, codebook).argmin(1)
    assert torch.equal(nearest_codes(z, codebook, chunk_size), expected)


@pytest.mark.parametrize("layout", [(3, 4), (3, 4, 6), (2, 4, 3, 5)], ids=["BC", "BCL", "BCHW"])
def test_quantizer_picks_nearest_code_for_each_layout(layout):
    q = VectorQuantizer(16, 4, chunk_size=5)
    z = torch.randn(*layout)
    out = q(z)
    assert isinstance(out, QuantizerOutput)
    assert out.z_q.shape == z.shape and out.indices.shape == (layout[0], *layout[2:])
    expected = torch.cdist(_flat(z), q.codebook.detach()).argmin(1)
    assert torch.equal(out.indices.reshape(-1), expected)
    torch.testing.assert_close(_flat(out.z_q), q.codebook.detach()[expected])
    torch.testing.assert_close(q.indices_to_codes(out.indices), out.z_q.detach())


def test_lookup_blocks_stay_bounded_with_65536_codes(monkeypatch):
    """No distance block larger than MAX_BLOCK values is built, whatever N is."""
    seen: list[tuple[int, int]] = []
    scores = Q._scores

    def watch(z, codebook, code_sq):
        seen.append((z.shape[0], codebook.shape[0]))
        return scores(z, codebook, code_sq)

    monkeypatch.setattr(Q, "_scores", watch)
    z, codebook = torch.randn(4096, 64), torch.randn(65536, 64)
    idx = nearest_codes(z, codebook)
    assert max(n * k for n, k in seen) <= Q.MAX_BLOCK
    assert sum(n for n, _ in seen) == 4096
    # spot check against brute force on a few rows
    rows = torch.arange(0, 4096, 257)
    assert torch.equal(idx[rows], torch.cdist(z[rows], codebook).argmin(1))

    seen.clear()
    q = VectorQuantizer(65536, 8, chunk_size=100)
    q(torch.randn(2, 8, 16, 16))
    assert max(n for n, _ in seen) <= 100 and sum(n for n, _ in seen) == 512


def test_code_statistics_by_hand():
    idx = torch.tensor([0, 0, 1, 3])  # p = (1/2, 1/4, 0, 1/4, 0, ...) over K = 8
    perplexity, usage = code_statistics(idx, 8)
    entropy = -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    assert perplexity.item() == pytest.approx(np.exp(entropy), rel=1e-6)
    assert usage.item() == pytest.approx(3 / 8)


# ----------------------------------------------------------------------------- gradients


def _grad(out: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(out, wrt, retain_graph=True, allow_unused=True)
    return torch.zeros_like(wrt) if g is None else g


def test_gradients_of_each_term_reach_only_their_target():
    beta = 0.3
    q = VectorQuantizer(4, 3, beta=beta)
    with torch.no_grad():
        q.codebook.copy_(torch.randn(4, 3))
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = q(z_e)
    w = torch.randn_like(z_e)
    rec = (w * out.z_q).sum() + (out.z_q**2).sum()  # a stand-in for -log p(x|z_q)
    codebook, z = q.codebook, z_e

    # reconstruction: straight-through to z_e (exactly d rec / d z_q), nothing to the codebook
    z_q = out.z_q.detach().requires_grad_()
    d_rec_d_zq = torch.autograd.grad((w * z_q).sum() + (z_q**2).sum(), z_q)[0]
    assert torch.equal(_grad(rec, z), d_rec_d_zq)
    assert torch.count_nonzero(_grad(rec, codebook)) == 0

    flat, e = _flat(z_e.detach()), q.codebook.detach()[out.indices.reshape(-1)]
    # commitment: beta * 2 (z_e - e) to the encoder, nothing to the codebook
    g = _grad(out.commitment_loss.sum(), z)
    torch.testing.assert_close(_flat(g), 2 * beta * (flat - e))
    assert torch.count_nonzero(_grad(out.commitment_loss.sum(), codebook)) == 0

    # codebook loss: -2 sum_{n: k_n = k} (z_n - e_k) to code k, nothing to the encoder
    g = _grad(out.codebook_loss.sum(), codebook)
    expected = torch.zeros(4, 3).index_add_(0, out.indices.reshape(-1), -2 * (flat - e))
    torch.testing.assert_close(g, expected)
    assert torch.count_nonzero(_grad(out.codebook_loss.sum(), z)) == 0


def test_loss_values_by_hand():
    q = VectorQuantizer(5, 2, beta=0.25)
    z_e = torch.randn(3, 2, 4)
    out = q(z_e)
    e = q.indices_to_codes(out.indices).detach()
    sq = ((z_e - e) ** 2).sum((1, 2))
    torch.testing.assert_close(out.codebook_loss, sq)
    torch.testing.assert_close(out.commitment_loss, 0.25 * sq)


def test_ema_codebook_gets_no_gradient():
    q = VectorQuantizer(4, 3, ema=True)
    assert list(q.parameters()) == []
    z_e = torch.randn(2, 3, 5, requires_grad=True)
    out = q(z_e)
    assert not q.codebook.requires_grad
    assert torch.count_nonzero(out.codebook_loss) == 0
    (out.z_q.sum() + out.commitment_loss.sum()).backward()
    assert z_e.grad is not None and q.codebook.grad is None


# ----------------------------------------------------------------------------- state updates


def test_ema_update_matches_hand_computation():
    k, c, decay, eps = 3, 2, 0.9, 1e-5
    q = VectorQuantizer(k, c, ema=True, decay=decay, eps=eps)
    codebook = np.array([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]], dtype=np.float32)
    count0 = np.array([2.0, 1.0, 0.5], dtype=np.float32)
    sum0 = codebook * count0[:, None]
    with torch.no_grad():
        q.codebook.copy_(torch.from_numpy(codebook))
        q.ema_count.copy_(torch.from_numpy(count0))
        q.ema_sum.copy_(torch.from_numpy(sum0))
    z = np.array([[0.5, 0.1], [-0.2, 0.3], [4.0, 6.0]], dtype=np.float32)  # codes 0, 0, 1
    q.train()
    q(torch.from_numpy(z))

    n_k = np.array([2.0, 1.0, 0.0])
    m_k = np.array([z[0] + z[1], z[2], [0.0, 0.0]])
    count = decay * count0 + (1 - decay) * n_k
    sums = decay * sum0 + (1 - decay) * m_k
    total = count.sum()
    smoothed = (count + eps) / (total + k * eps) * total
    np.testing.assert_allclose(q.ema_count.numpy(), count, rtol=1e-6)
    np.testing.assert_allclose(q.ema_sum.numpy(), sums, rtol=1e-6)
    np.testing.assert_allclose(q.codebook.numpy(), sums / smoothed[:, None], rtol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_no_state_update_outside_training(mode):
    q = VectorQuantizer(4, 2, ema=True, restart_after=1)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(8, 2) * 3
    if mode == "eval":
        q.eval()
        q(z)
    else:
        with torch.no_grad():
            q(z)
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("ema", [False, True], ids=["learned", "ema"])
def test_restart_revives_a_dead_code(ema):
    q = VectorQuantizer(4, 2, ema=ema, restart_after=2)
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
    with torch.no_grad():
        q.codebook.data.copy_(centres)
        if ema:
            q.ema_sum.copy_(centres)
    z = (centres[:3].repeat(4, 1) + 0.01 * torch.randn(12, 2)).T.unsqueeze(0)  # [1, 2, 12]
    q.train()
    assert 3 not in q(z).indices  # first unused step: not yet dead
    assert q.unused_steps.tolist() == [0, 0, 0, 1]
    q(z)  # second unused step: code 3 is re-initialised to one of these encoder outputs
    new = q.codebook.detach()[3]
    assert torch.isclose(_flat(z), new).all(1).any()
    assert q.unused_steps[3] == 0
    assert 3 in q(z).indices


def test_cosine_codes_are_unit_vectors_and_nearest_by_angle():
    q = VectorQuantizer(8, 3, cosine=True)
    with torch.no_grad():
        q.codebook.copy_(torch.randn(8, 3))
    z = torch.randn(2, 3, 5) * 4
    out = q(z)
    torch.testing.assert_close(out.z_q.norm(dim=1), torch.ones(2, 5))
    cos = (
        torch.nn.functional.normalize(_flat(z), dim=1)
        @ torch.nn.functional.normalize(q.codebook.detach(), dim=1).T
    )
    assert torch.equal(out.indices.reshape(-1), cos.argmax(1))


@pytest.mark.parametrize("ema", [False, True], ids=["learned", "ema"])
def test_state_dict_round_trip_weights_only(ema):
    q = VectorQuantizer(6, 3, ema=ema, restart_after=3)
    q.train()
    for _ in range(4):
        q(torch.randn(5, 3, 4))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = VectorQuantizer(6, 3, ema=ema, restart_after=3)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in q.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    z = torch.randn(2, 3, 4)
    q.eval(), fresh.eval()
    assert torch.equal(q(z).indices, fresh(z).indices)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_codes": 0}, "num_codes"),
        ({"beta": -1.0}, "beta"),
        ({"decay": 1.0}, "decay"),
        ({"restart_after": -1}, "restart_after"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = {"num_codes": 4, "code_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        VectorQuantizer(**args)


def test_bad_inputs_raise():
    q = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match=r"z_e must have shape \[B, 3"):
        q(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="finite"):
        q(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\]"):
        q.indices_to_codes(torch.tensor([[4]]))


# ----------------------------------------------------------------------------- FSQ


def _fsq_reference(z: np.ndarray, levels) -> np.ndarray:
    """Mentzer et al. (2023) appendix code in numpy, channels on axis 1."""
    lv = np.asarray(levels, dtype=np.float64).reshape(1, -1, *([1] * (z.ndim - 2)))
    half_l = (lv - 1) * (1 - 1e-3) / 2
    offset = np.where(lv % 2 == 1, 0.0, 0.5)
    bounded = np.tanh(z + np.tan(offset / half_l)) * half_l - offset
    return np.round(bounded) / (lv // 2)


def test_fsq_sizes():
    f = FSQ((8, 5, 5, 5))
    assert f.num_codes == 1000 and f.code_dim == 4


def test_fsq_rounding_matches_reference_and_levels():
    levels = (3, 4, 5, 8, 2)
    f = FSQ(levels)
    z = torch.randn(64, 5, 3, 3, dtype=torch.float64) * 3
    out = f(z.float())
    np.testing.assert_allclose(out.z_q.numpy(), _fsq_reference(z.numpy(), levels), atol=1e-6)
    for i, level in enumerate(levels):
        values = torch.unique(out.z_q[:, i])
        hw = level // 2
        assert set(values.tolist()) <= {(d - hw) / hw for d in range(level)}
    # extremes and zero, by hand: L=4 takes {-1, -1/2, 0, 1/2}, L=2 takes {-1, 0}
    big = torch.tensor([[50.0] * 5, [-50.0] * 5, [0.0] * 5])
    torch.testing.assert_close(
        f(big).z_q, torch.tensor([[1.0, 0.5, 1.0, 0.75, 0.0], [-1.0] * 5, [0.0] * 5])
    )
    assert (
        torch.count_nonzero(out.codebook_loss) == 0
        and torch.count_nonzero(out.commitment_loss) == 0
    )


def test_fsq_straight_through_gradient_is_bound_derivative():
    levels = (7, 6, 2)
    f = FSQ(levels)
    z = torch.randn(5, 3, 3, requires_grad=True)
    f(z).z_q.sum().backward()
    zn = z.detach().numpy().astype(np.float64)
    lv = np.array(levels, dtype=np.float64).reshape(1, -1, 1)
    half_l = (lv - 1) * (1 - 1e-3) / 2
    shift = np.tan(np.where(lv % 2 == 1, 0.0, 0.5) / half_l)
    expected = half_l * (1 - np.tanh(zn + shift) ** 2) / (lv // 2)
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_fsq_index_round_trip_over_full_codebook():
    f = FSQ((8, 5, 5, 5))
    idx = torch.arange(f.num_codes)
    codes = f.indices_to_codes(idx)
    assert codes.shape == (1000, 4)
    assert torch.equal(f.codes_to_indices(codes), idx)
    assert torch.unique(codes, dim=0).shape[0] == 1000
    # and the quantizer's own output indexes its own codes
    out = f(torch.randn(4, 4, 6, 6) * 2)
    torch.testing.assert_close(f.indices_to_codes(out.indices), out.z_q.detach())


def test_fsq_bad_arguments_raise():
    with pytest.raises(ValueError, match="levels"):
        FSQ((8, 1))
    with pytest.raises(ValueError, match=r"\[B, 3"):
        FSQ((3, 3, 3))(torch.randn(2, 4))


# ----------------------------------------------------------------------------- distributed


def _ddp_worker(rank: int, port: int, path: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    q = VectorQuantizer(6, 2, ema=True, decay=0.5, restart_after=1).train()
    z = torch.randn(2, 2, 8, generator=torch.Generator().manual_seed(10))[rank : rank + 1]
    torch.manual_seed(rank)  # different restart draws per rank: the broadcast must win
    q(z * 3)
    torch.save(q.state_dict(), f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ema_and_restarts_agree_across_ranks(tmp_path):
    """Two gloo ranks with different halves of a batch end with one codebook, equal to the
    EMA a single process computes on the whole batch (for the codes that were not restarted)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k

    torch.manual_seed(0)
    one = VectorQuantizer(6, 2, ema=True, decay=0.5, restart_after=1).train()
    z = torch.randn(2, 2, 8, generator=torch.Generator().manual_seed(10))
    one(z * 3)
    alive = one.unused_steps.eq(0) & (one.ema_count != 1.0)  # used codes: not restarted
    assert alive.any()
    torch.testing.assert_close(r0["codebook"][alive], one.codebook[alive])
    torch.testing.assert_close(r0["ema_count"], one.ema_count.where(alive, r0["ema_count"]))


def test_quantizers_run_in_float32_under_bf16_autocast():
    # two codes whose scores ||e||^2 - 2 z.e differ by 0.05 around -10^4: bfloat16 (8-bit
    # mantissa, steps of 64 there) cannot tell them apart, float32 can
    vq = VectorQuantizer(2, 2).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[100.0, 0.0], [100.0, 0.5]]))
    z = torch.tensor([100.0, 0.1]).reshape(1, 2, 1)  # nearer the first code
    assert vq(z).indices.item() == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert nearest_codes(z.reshape(1, 2), vq.codebook).item() == 1  # bf16 gets it wrong
        out = vq(z)
        half = vq(z.bfloat16())
    assert out.indices.item() == 0 and out.z_q.dtype == torch.float32
    assert half.z_q.dtype == torch.float32
    fsq = FSQ((8, 5, 5, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fsq(torch.randn(2, 4, 3, 3).bfloat16()).z_q.dtype == torch.float32
