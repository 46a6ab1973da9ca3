"""Rotation trick, residual VQ, LFQ and k-means init against independent references:
vector-quantize-pytorch (same inputs and codebooks -> same outputs and gradients) and
scikit-learn's KMeans."""

from __future__ import annotations

import pytest
import torch

from vaekit.quantizers import LFQ, ResidualVQ, VectorQuantizer, kmeans, rotate_to

vqp = pytest.importorskip("vector_quantize_pytorch")


def _grads(z: torch.Tensor, out: torch.Tensor, extra: torch.Tensor | float = 0.0):
    """dL/dz for L = sum(w * out) + extra, w a fixed random weighting."""
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    return torch.autograd.grad((w * out).sum() + extra, z)[0]


def test_rotate_to_matches_reference_value_and_gradient():
    torch.manual_seed(0)
    z = torch.randn(64, 6, requires_grad=True)
    e = torch.randn(64, 6)
    ours = rotate_to(z, e)
    ref = vqp.vector_quantize_pytorch.rotate_to(z, e)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours.detach(), e)  # the forward value is the code
    torch.testing.assert_close(_grads(z, ours), _grads(z, ref))


def test_rotation_gradient_is_the_rotation_by_hand():
    """dL/dz = (|e|/|z|) R^T g with R = I - 2ww^T + 2 e_hat z_hat^T (Fifty et al. 2024, eq. 4.2)."""
    torch.manual_seed(1)
    z = torch.randn(1, 4, dtype=torch.float64, requires_grad=True)
    e = torch.randn(1, 4, dtype=torch.float64)
    g = torch.randn(1, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad((rotate_to(z, e) * g).sum(), z)
    zh, eh = z.detach()[0] / z.detach().norm(), e[0] / e.norm()
    w = (zh + eh) / (zh + eh).norm()
    r = torch.eye(4, dtype=torch.float64) - 2 * torch.outer(w, w) + 2 * torch.outer(eh, zh)
    torch.testing.assert_close(r @ zh, eh)  # R rotates z_hat onto e_hat
    torch.testing.assert_close(grad[0], (e.norm() / z.detach().norm()) * r.t() @ g[0])


def _reference_vq(codebook: torch.Tensor, rotation: bool):
    k, d = codebook.shape
    ref = vqp.VectorQuantize(
        dim=d,
        codebook_size=k,
        accept_image_fmap=True,
        rotation_trick=rotation,
        commitment_weight=1.0,
    ).train()
    ref._codebook.embed.data.copy_(codebook.unsqueeze(0))
    return ref


@pytest.mark.parametrize("rotation", [False, True], ids=["straight_through", "rotation_trick"])
def test_vector_quantizer_matches_reference(rotation):
    torch.manual_seed(2)
    ours = VectorQuantizer(16, 5, beta=1.0, rotation_trick=rotation).train()
    ref = _reference_vq(ours.codebook.detach(), rotation)
    z = torch.randn(3, 5, 4, 4, requires_grad=True)
    out = ours(z)
    zq, idx, commit = ref(z, freeze_codebook=True)
    torch.testing.assert_close(out.z_q, zq)
    assert torch.equal(out.indices, idx)
    # ours: beta ||z - sg[e]||^2 summed per example; the reference: its mean over all elements
    torch.testing.assert_close(out.commitment_loss.sum() / z.numel(), commit.reshape(()))
    torch.testing.assert_close(_grads(z, out.z_q), _grads(z, zq))


@pytest.mark.parametrize("rotation", [False, True], ids=["straight_through", "rotation_trick"])
def test_residual_vq_matches_reference(rotation):
    torch.manual_seed(3)
    ours = ResidualVQ(3, 8, 4, beta=1.0, rotation_trick=rotation).train()
    ref = vqp.ResidualVQ(
        dim=4,
        num_quantizers=3,
        codebook_size=8,
        rotation_trick=rotation,
        commitment_weight=1.0,
    ).train()
    for mine, theirs in zip(ours.layers, ref.layers, strict=True):
        theirs._codebook.embed.data.copy_(mine.codebook.detach().unsqueeze(0))
    # the reference takes [B, N, d] (its image-map mode fails in this version): ours [B, d, N]
    z = torch.randn(2, 15, 4, requires_grad=True)
    out = ours(z.movedim(-1, 1))
    zq, idx, losses = ref(z, freeze_codebook=True)
    torch.testing.assert_close(out.z_q.movedim(1, -1), zq)
    assert torch.equal(out.indices, idx.movedim(-1, 1))  # ours [B, Q, N], theirs [B, N, Q]
    torch.testing.assert_close(out.commitment_loss.sum() / z.numel(), losses.sum())
    torch.testing.assert_close(_grads(z, out.z_q.movedim(1, -1)), _grads(z, zq))
    # the codes of the indices add up to the output
    torch.testing.assert_close(ours.indices_to_codes(out.indices), out.z_q.detach())


def test_one_residual_layer_is_a_vector_quantizer():
    torch.manual_seed(4)
    r = ResidualVQ(1, 8, 3)
    v = VectorQuantizer(8, 3)
    v.load_state_dict(r.layers[0].state_dict())
    z = torch.randn(4, 3, 2)
    a, b = r(z), v(z)
    torch.testing.assert_close(a.z_q, b.z_q)
    assert torch.equal(a.indices[:, 0], b.indices)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_lfq_matches_reference_values_entropy_loss_and_gradients(gamma):
    torch.manual_seed(6)
    d = 5
    ours = LFQ(d, entropy_weight=0.1, diversity_gamma=gamma, inv_temperature=100.0).train()
    ref = vqp.LFQ(
        dim=d, entropy_loss_weight=0.1, diversity_gamma=gamma, commitment_loss_weight=0.0
    ).train()
    # small inputs: soft assignments far from one-hot, so the entropy gradient matters
    z = (0.01 * torch.randn(3, d, 4, 4)).requires_grad_()
    out = ours(z)
    (zq, idx, aux), parts = ref(z, inv_temperature=100.0, return_loss_breakdown=True)
    torch.testing.assert_close(out.z_q, zq)
    assert torch.equal(out.indices, idx)
    positions = 16
    # ours: summed over positions per example; the reference: a mean over positions and batch
    torch.testing.assert_close(out.codebook_loss.mean() / positions, aux)
    assert float(parts.per_sample_entropy.detach()) > 0.1  # the test is not vacuous
    g_ours = _grads(z, out.z_q, out.codebook_loss.mean() / positions)
    g_ref = _grads(z, zq, aux)
    torch.testing.assert_close(g_ours, g_ref)
    torch.testing.assert_close(ours.indices_to_codes(out.indices), out.z_q.detach())


def test_lfq_commitment_matches_reference():
    torch.manual_seed(7)
    ours = LFQ(4, entropy_weight=0.0, beta=0.25).train()
    ref = vqp.LFQ(dim=4, entropy_loss_weight=0.0, commitment_loss_weight=0.25).train()
    z = torch.randn(2, 4, 3, 3)
    _, parts = ref(z, return_loss_breakdown=True)
    torch.testing.assert_close(ours(z).commitment_loss.sum() / z.numel(), 0.25 * parts.commitment)


def _blobs(n_per: int = 40, k: int = 4, d: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(8)
    centres = 10 * torch.randn(k, d, generator=g)
    return (centres.repeat_interleave(n_per, 0) + torch.randn(n_per * k, d, generator=g)).double()


def test_kmeans_matches_scikit_learn_from_the_same_start():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = _blobs()
    k = 6
    start = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(9))[:k]]
    ours = kmeans(x, k, iters=20, generator=torch.Generator().manual_seed(9))
    ref = sklearn_cluster.KMeans(
        k, init=start.numpy(), n_init=1, max_iter=20, tol=0.0, algorithm="lloyd"
    ).fit(x.numpy())
    torch.testing.assert_close(ours, torch.from_numpy(ref.cluster_centers_))


def test_kmeans_init_sets_codebook_once_and_survives_state_dict():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = _blobs().float()
    q = VectorQuantizer(4, 3, kmeans_init=True, kmeans_iters=20).train()
    torch.manual_seed(10)
    start = x[torch.randperm(x.shape[0])[:4]]
    torch.manual_seed(10)
    q(x.t().unsqueeze(0))  # [1, C, N]
    ref = sklearn_cluster.KMeans(4, init=start.numpy(), n_init=1, max_iter=20, tol=0.0).fit(x)
    torch.testing.assert_close(q.codebook.detach(), torch.from_numpy(ref.cluster_centers_).float())
    assert bool(q.initialised)
    before = q.codebook.detach().clone()
    q(torch.randn(1, 3, 50))  # no second initialisation
    torch.testing.assert_close(q.codebook.detach(), before)
    fresh = VectorQuantizer(4, 3, kmeans_init=True)
    fresh.load_state_dict(q.state_dict())
    assert bool(fresh.initialised)


def test_kmeans_init_skipped_outside_training():
    q = VectorQuantizer(4, 3, kmeans_init=True).eval()
    before = q.codebook.detach().clone()
    q(torch.randn(2, 3, 10))
    assert not bool(q.initialised)
    torch.testing.assert_close(q.codebook.detach(), before)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ResidualVQ(0, 8, 4), "num_quantizers"),
        (lambda: LFQ(0), "code_dim"),
        (lambda: LFQ(21), "code_dim"),
        (lambda: LFQ(4, inv_temperature=0.0), "inv_temperature"),
        (lambda: VectorQuantizer(4, 3, kmeans_iters=-1), "kmeans_iters"),
    ],
)
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\[B, 4, \*positions\]"):
        LFQ(4)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="one index per codebook"):
        ResidualVQ(2, 8, 4).indices_to_codes(torch.zeros(2, 3, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "quantizer, extra, keys, absent",
    [
        ("residual", {"num_quantizers": 3}, {"num_quantizers", "rotation_trick"}, set()),
        ("lfq", {"num_codes": 64}, {"num_codes"}, {"num_quantizers", "rotation_trick"}),
        ("vq", {"rotation_trick": True}, {"rotation_trick", "kmeans_init"}, {"num_quantizers"}),
    ],
)
def test_vqvae_builds_each_quantizer_from_the_config(quantizer, extra, keys, absent):
    from vaekit.config import RunConfig
    from vaekit.models.build import build_model

    cfg = RunConfig().replace(model="vqvae", quantizer=quantizer, **extra)
    section = cfg.to_dict()["model"]
    assert keys <= set(section) and not absent & set(section)
    model = build_model(cfg.model, (1, 28, 28))
    q = model.quantizer
    if quantizer == "residual":
        assert isinstance(q, ResidualVQ) and len(q.layers) == 3 and q.layers[0].ema
    if quantizer == "lfq":
        assert isinstance(q, LFQ) and q.num_codes == 64 and q.code_dim == 6
    if quantizer == "vq":
        assert q.rotation_trick
    x = torch.rand(2, 1, 28, 28)
    out = model(x)  # a training call (EMA / k-means state may change)
    assert out.likelihood.mean.shape == x.shape
    out = model.eval()(x)
    idx = out.quantized.indices
    torch.testing.assert_close(q.indices_to_codes(idx), out.quantized.z_q.detach())


def test_lfq_needs_a_power_of_two_codebook():
    from vaekit.models.vqvae import build_vqvae

    with pytest.raises(ValueError, match="power of 2"):
        build_vqvae((1, 28, 28), quantizer="lfq", num_codes=100)
    with pytest.raises(ValueError, match="log2"):
        build_vqvae((1, 28, 28), quantizer="lfq", num_codes=64, code_dim=5)
