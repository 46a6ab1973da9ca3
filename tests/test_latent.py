"""vaekit.latent against closed forms and NumPy / SciPy references (issue 19, part 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import geometric_slerp

import vaekit
from vaekit import latent
from vaekit.models.networks import build_networks
from vaekit.priors import StandardNormal


def _tiny_vae(d_in=12, latent_dim=5, seed=0) -> vaekit.VAE:
    torch.manual_seed(seed)
    enc, dec = build_networks("mlp", (d_in,), latent_dim, hidden=(16,))
    return vaekit.VAE(enc, dec, prior=StandardNormal(latent_dim)).eval()


def test_latent_is_reachable_after_import_vaekit():
    assert vaekit.latent is latent


# ---------------------------------------------------------------- interpolation


@pytest.mark.parametrize("d", [2, 7, 64])
def test_slerp_matches_scipy_on_the_unit_sphere(d):
    g = np.random.default_rng(d)
    a, b = g.normal(size=d), g.normal(size=d)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    t = np.linspace(0, 1, 11)
    ours = latent.slerp(torch.tensor(a), torch.tensor(b), t).numpy()
    np.testing.assert_allclose(ours, geometric_slerp(a, b, t), atol=1e-10)


def test_slerp_closed_form_on_a_sphere_of_radius_r():
    g = np.random.default_rng(1)
    r = 3.7
    a, b = g.normal(size=(2, 10))
    a, b = r * a / np.linalg.norm(a), r * b / np.linalg.norm(b)
    omega = np.arccos(a @ b / r**2)
    t = np.array([0.0, 0.25, 0.5, 0.8, 1.0])
    z = latent.slerp(torch.tensor(a), torch.tensor(b), t).numpy()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), r, rtol=1e-12)  # stays on the sphere
    np.testing.assert_allclose(z[0], a, atol=1e-12)
    np.testing.assert_allclose(z[-1], b, atol=1e-12)
    angles = np.arccos(np.clip(z @ a / r**2, -1, 1))  # angle to a grows as t * omega
    np.testing.assert_allclose(angles, t * omega, atol=1e-7)
    bisector = r * (a + b) / np.linalg.norm(a + b)  # the midpoint is on the bisector
    np.testing.assert_allclose(z[2], bisector, atol=1e-12)


def test_slerp_batched_rows_each_use_their_own_angle():
    g = torch.Generator().manual_seed(0)
    z0, z1 = (
        torch.randn(4, 6, generator=g, dtype=torch.float64),
        torch.randn(4, 6, generator=g, dtype=torch.float64),
    )
    out = latent.slerp(z0, z1, [0.3, 0.6])
    assert out.shape == (2, 4, 6)
    for i in range(4):
        n0, n1 = z0[i].norm().item(), z1[i].norm().item()
        omega = np.arccos(float(z0[i] @ z1[i]) / (n0 * n1))
        w0 = np.sin(0.7 * omega) / np.sin(omega)
        w1 = np.sin(0.3 * omega) / np.sin(omega)
        np.testing.assert_allclose(
            out[0, i].numpy(), w0 * z0[i].numpy() + w1 * z1[i].numpy(), atol=1e-12
        )


@pytest.mark.parametrize("case", ["parallel", "antiparallel", "zero", "equal"])
def test_slerp_falls_back_to_lerp_where_the_angle_is_degenerate(case):
    a = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    b = {
        "parallel": 2 * a,
        "antiparallel": -3 * a,
        "zero": torch.zeros(3, dtype=torch.float64),
        "equal": a.clone(),
    }[case]
    t = [0.0, 0.3, 1.0]
    out = latent.slerp(a, b, t)
    expected = np.stack([(1 - s) * a.numpy() + s * b.numpy() for s in t])
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_lerp_endpoints_midpoint_and_scalar_t():
    a, b = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([5.0, 0.0, -1.0])
    out = latent.lerp(a, b, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(out.numpy(), [[1, -2, 3], [3, -1, 1], [5, 0, -1]])
    assert latent.lerp(a, b, 0.25).shape == (3,)


def test_interpolation_rejects_mismatched_codes_and_bad_t():
    with pytest.raises(ValueError, match="same shape"):
        latent.slerp(torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match="finite"):
        latent.lerp(torch.zeros(3), torch.ones(3), float("nan"))


# ---------------------------------------------------------------- units and traversals


def test_rank_units_orders_by_kl_computed_independently():
    model = _tiny_vae()
    # make the KL differ clearly between units: scale the encoder's mean rows
    with torch.no_grad():
        last = model.encoder.net[-1]
        last.weight[:5] *= torch.tensor([0.1, 3.0, 0.01, 1.0, 6.0])[:, None]
        last.bias[:5] *= torch.tensor([0.1, 3.0, 0.01, 1.0, 6.0])
    x = torch.rand(200, 12)
    h = model.encoder(x).detach().numpy().astype(np.float64)
    mu, logvar = h[:, :5], h[:, 5:]
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)  # KL(N(mu, s^2) || N(0, 1)) per unit
    ranking = latent.rank_units(model, x, batch_size=64)
    np.testing.assert_allclose(ranking.kl.numpy(), kl.mean(0), rtol=1e-5)
    assert ranking.order == list(np.argsort(-kl.mean(0), kind="stable"))
    variance = mu.var(0, ddof=1)
    assert ranking.active == [d for d in ranking.order if variance[d] > 0.01]
    assert ranking.active and len(ranking.active) < 5  # unit 2 is inactive by construction


def test_traverse_sets_one_unit_at_a_time():
    model = _tiny_vae()
    z = torch.randn(5)
    values = [-2.0, 0.0, 1.5]
    out = latent.traverse(model, z, units=[3, 0], values=values)
    assert out.shape == (2, 3, 12)
    for i, u in enumerate([3, 0]):
        for j, v in enumerate(values):
            zz = z.clone()
            zz[u] = v
            expected = torch.sigmoid(model.decoder(zz[None]))[0]  # Bernoulli mean
            torch.testing.assert_close(out[i, j], expected.detach(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="units"):
        latent.traverse(model, z, units=[5])


def test_encode_and_decode_are_posterior_and_likelihood_means():
    model = _tiny_vae()
    x = torch.rand(7, 12)
    mu = model.encoder(x).detach()[:, :5]
    torch.testing.assert_close(latent.encode(model, x, batch_size=3), mu)
    z = torch.randn(2, 3, 5)
    logits = model.decoder(z.reshape(6, 5)).detach().reshape(2, 3, 12)
    torch.testing.assert_close(latent.decode(model, z, unit=True), torch.sigmoid(logits))


# ---------------------------------------------------------------- attribute vectors


def test_attribute_vector_is_the_difference_of_masked_means():
    g = np.random.default_rng(0)
    codes = g.normal(size=(50, 4))
    mask = g.random(50) < 0.3
    ours = latent.attribute_vector(torch.tensor(codes), torch.tensor(mask))
    np.testing.assert_allclose(ours.numpy(), codes[mask].mean(0) - codes[~mask].mean(0), atol=1e-12)


def test_attribute_vectors_from_classes_skip_an_absent_class():
    g = np.random.default_rng(1)
    codes = g.normal(size=(60, 3))
    labels = g.choice([0, 1, 3], size=60)  # class 2 absent
    out = latent.attribute_vectors(torch.tensor(codes), torch.tensor(labels), ["a", "b", "c", "d"])
    assert list(out) == ["a", "b", "d"]
    for name, k in (("a", 0), ("b", 1), ("d", 3)):
        m = labels == k
        np.testing.assert_allclose(
            out[name].numpy(), codes[m].mean(0) - codes[~m].mean(0), atol=1e-12
        )


def test_add_attribute_and_misuse():
    z, v = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    torch.testing.assert_close(latent.add_attribute(z, v, -2.0), torch.tensor([0.0, 4.0]))
    with pytest.raises(ValueError, match="some examples with the attribute"):
        latent.attribute_vector(torch.zeros(4, 2), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="size D"):
        latent.add_attribute(z, torch.zeros(3))
    with pytest.raises(ValueError, match="labels must be"):
        latent.attribute_vectors(torch.zeros(4, 2), torch.zeros(4))


def test_dsprites_attributes_follow_the_factors():
    from vaekit.data import DSprites, dsprites

    splits = dsprites(n=3000, test_fraction=0.05)
    x, masks, names = latent.data_attributes(splits, max_examples=100)
    factors = DSprites.index_to_factors(splits.test.indices[:100]).numpy()
    assert names[:3] == ["square", "ellipse", "heart"] and len(names) == 7
    np.testing.assert_array_equal(masks[:, :3].numpy(), factors[:, :1] == np.arange(3))
    np.testing.assert_array_equal(masks[:, 3].numpy(), factors[:, 1] >= 3)  # scale: 6 classes
    np.testing.assert_array_equal(masks[:, 5].numpy(), factors[:, 3] >= 16)  # posX: 32 classes
    assert x.shape == (100, 4096)


def test_class_attributes_of_a_labelled_data_set():
    from vaekit.data.dataset import Dataset, DataSplits

    y = torch.tensor([0, 2, 1, 2, 0, 1])
    test = Dataset(torch.rand(6, 4), y, split="test")
    splits = DataSplits(test, None, test, None, "mnist", (1, 2, 2), (4,))
    x, masks, names = latent.data_attributes(splits)
    assert names == ["digit 0", "digit 1", "digit 2"]
    np.testing.assert_array_equal(masks.numpy(), y.numpy()[:, None] == np.arange(3))


def test_folder_attributes_read_labelled_sub_folders(tmp_path):
    from PIL import Image

    g = np.random.default_rng(0)
    expected = {}
    for label, n in (("smile", 3), ("neutral", 2)):
        (tmp_path / label).mkdir()
        for i in range(n):
            a = g.integers(0, 256, size=(5, 4), dtype=np.uint8)
            Image.fromarray(a, mode="L").save(tmp_path / label / f"{i}.png")
            expected.setdefault(label, []).append(a.astype(np.float32).reshape(-1) / 255)
    x, masks, names = latent.folder_attributes(tmp_path)
    assert names == ["neutral", "smile"]  # sorted sub-folder names
    np.testing.assert_allclose(
        x.numpy(), np.stack(expected["neutral"] + expected["smile"]), atol=1e-6
    )
    np.testing.assert_array_equal(masks.numpy(), [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]])
    (tmp_path / "neutral" / "0.png").unlink()
    (tmp_path / "neutral" / "1.png").unlink()
    with pytest.raises(ValueError, match="at least two sub-folders"):
        latent.folder_attributes(tmp_path)
