"""Tests for vaekit.data.dsprites: the procedural dSprites generator and its lazy splits.

References are independent of the code under test: np.unravel_index / np.ravel_multi_index for
the index order, the closed-form shape areas, the documented pixel position of each position
class, and brute-force counting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch

import vaekit.data as data
from vaekit.data import DSprites, DSpritesSplit, dsprites
from vaekit.data import _dsprites as mod

SIZES = (3, 6, 40, 32, 32)
N = 737_280
STRIDE_EDGES = [0, 1, 31, 32, 1023, 1024, 40959, 40960, 245759, 245760, 491520, N - 1]
# Closed-form areas (pixels) at scale 1, from the geometry in the module docstring.
_KAPPA = (math.pi / 4 + 1 / 3) / (2 + math.pi / 2)
_D = 8.5 / (1 + _KAPPA)
AREA_AT_SCALE_1 = {
    0: (8.5 * math.sqrt(2)) ** 2,  # square of side 8.5 * sqrt 2
    1: math.pi * 8.5 * 4.25,  # ellipse
    2: (2 + math.pi / 2) * _D**2,  # diamond 2 d^2 + two half-discs of radius d / sqrt 2
}
PIXEL_CENTRES = torch.arange(64, dtype=torch.float64) + 0.5


@pytest.fixture(scope="module")
def ds() -> DSprites:
    return DSprites()


@pytest.fixture(scope="module")
def full() -> data.DataSplits:
    return dsprites()


def expected_centre(k: torch.Tensor) -> torch.Tensor:
    """Documented pixel coordinate of position class k: 8.75 + 46.5 * value."""
    return 8.75 + 46.5 * torch.from_numpy(np.linspace(0, 1, 32))[k]


def centre_of_mass(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(column, row) centre of mass of [N, 64, 64] masks, in pixel coordinates."""
    im = images.double().reshape(-1, 64, 64)
    area = im.sum((1, 2))
    return (im.sum(1) @ PIXEL_CENTRES) / area, (im.sum(2) @ PIXEL_CENTRES) / area


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float((a & b).sum() / (a | b).sum())


def all_mask_factors(positions: tuple[int, ...]) -> torch.Tensor:
    """Every shape x scale x orientation at every (posX, posY) in ``positions``^2."""
    grids = torch.meshgrid(
        torch.arange(3),
        torch.arange(6),
        torch.arange(40),
        torch.tensor(positions),
        torch.tensor(positions),
        indexing="ij",
    )
    return torch.stack([g.reshape(-1) for g in grids], 1)


# ------------------------------------------------------------------------- the factor space


def test_count_and_factor_table(ds):
    assert mod.N_IMAGES == N == math.prod(SIZES) == len(ds)
    assert DSprites.factors == {"shape": 3, "scale": 6, "orientation": 40, "posX": 32, "posY": 32}
    assert list(DSprites.factors) == list(DSprites.factor_names)
    assert DSprites.factor_sizes == SIZES
    assert DSprites.image_shape == (1, 64, 64)


@pytest.mark.parametrize(
    "indices",
    [
        pytest.param(np.array(STRIDE_EDGES), id="edges"),
        pytest.param(np.random.default_rng(0).integers(0, N, 5000), id="random"),
        pytest.param(np.arange(N), id="all"),
    ],
)
def test_index_factor_round_trip_matches_unravel_index(indices):
    reference = np.stack(np.unravel_index(indices, SIZES), 1)
    factors = DSprites.index_to_factors(torch.from_numpy(indices))
    assert factors.dtype == torch.int64
    np.testing.assert_array_equal(factors.numpy(), reference)
    back = DSprites.factors_to_index(torch.from_numpy(reference))
    np.testing.assert_array_equal(back.numpy(), np.ravel_multi_index(reference.T, SIZES))
    np.testing.assert_array_equal(back.numpy(), indices)


def test_index_to_factors_keeps_leading_shape():
    idx = torch.tensor([[0, N - 1], [5, 245760]])
    f = DSprites.index_to_factors(idx)
    assert f.shape == (2, 2, 5)
    assert f[1, 1].tolist() == [1, 0, 0, 0, 0]
    assert DSprites.index_to_factors(7).tolist() == [0, 0, 0, 0, 7]


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(lambda: DSprites.index_to_factors([-1]), r"\[0, 737280\)", id="negative"),
        pytest.param(lambda: DSprites.index_to_factors([N]), r"\[0, 737280\)", id="too-large"),
        pytest.param(lambda: DSprites.index_to_factors([1.5]), "integers", id="float"),
        pytest.param(lambda: DSprites.factors_to_index([[3, 0, 0, 0, 0]]), "range", id="shape3"),
        pytest.param(lambda: DSprites.factors_to_index([[0, 0, 40, 0, 0]]), "range", id="ori40"),
        pytest.param(lambda: DSprites.factors_to_index([[0, 0, 0, 0]]), r"\[\.\.\., 5\]", id="4"),
        pytest.param(
            lambda: DSprites.render(DSprites(), torch.zeros(1, 1, 5, dtype=torch.long)),
            "render",
            id="3d",
        ),
        pytest.param(lambda: DSprites.sample_fixed_factor(4, "colour"), "factor", id="name"),
        pytest.param(lambda: DSprites.sample_fixed_factor(4, 5), "factor", id="column"),
        pytest.param(lambda: DSprites.sample_factors(-1), "n must", id="n"),
    ],
)
def test_bad_factor_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_factor_values_match_the_original_definition():
    f = DSprites.index_to_factors(torch.arange(N))
    v = DSprites.factor_values(f)
    assert v.shape == (N, 5) and v.dtype == torch.float64
    np.testing.assert_allclose(torch.unique(v[:, 0]).numpy(), [1, 2, 3])
    np.testing.assert_allclose(torch.unique(v[:, 1]).numpy(), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    ori = torch.unique(v[:, 2]).numpy()
    assert len(ori) == 40 and ori[0] == 0 and ori[-1] == pytest.approx(2 * math.pi)
    np.testing.assert_allclose(np.diff(ori), 2 * math.pi / 39)
    for col in (3, 4):
        np.testing.assert_allclose(torch.unique(v[:, col]).numpy(), np.arange(32) / 31)


# ------------------------------------------------------------------------------- rendering


def test_every_mask_is_binary_nonempty_and_inside_the_frame_at_the_extreme_positions(ds):
    # All 720 shape/scale/orientation masks, at both sub-pixel phases of both extremes of
    # both axes (posX, posY in {0, 1, 30, 31}): 11,520 images. Reference: the same mask at a
    # central position of the same phase, far from every border, has the same pixel count,
    # so nothing was cropped.
    f = all_mask_factors((0, 1, 30, 31))
    images = ds.render(f)
    assert images.shape == (len(f), 1, 64, 64) and images.dtype == torch.float32
    assert torch.isin(images, torch.tensor([0.0, 1.0])).all()
    area = images.sum((1, 2, 3))
    assert (area > 0).all()
    centre = f.clone()
    centre[:, 3:] = 16 + f[:, 3:] % 2  # 16 and 17 share the phases of the even/odd extremes
    assert torch.equal(area, ds.render(centre).sum((1, 2, 3)))


def test_images_are_exact_translations_between_positions_of_the_same_phase(ds):
    gen = torch.Generator().manual_seed(1)
    f = DSprites.sample_factors(400, gen)
    f[:, 3:] = f[:, 3:].clamp(max=29)
    moved = f.clone()
    moved[:, 3] += 2  # two position steps = exactly 3 pixels right
    a, b = ds.render(f)[:, 0], ds.render(moved)[:, 0]
    assert torch.equal(torch.roll(a, 3, dims=2), b)
    moved = f.clone()
    moved[:, 4] += 2  # 3 pixels down
    assert torch.equal(torch.roll(a, 3, dims=1), ds.render(moved)[:, 0])


@pytest.mark.parametrize("axis", ["posX", "posY"])
@pytest.mark.parametrize("shape", [0, 1, 2], ids=["square", "ellipse", "heart"])
def test_centre_of_mass_moves_linearly_with_position(ds, axis, shape):
    k = torch.arange(32)
    col = 3 if axis == "posX" else 4
    errors = []
    for scale in (0, 5):
        for orientation in (0, 7, 13, 26):
            f = torch.tensor([shape, scale, orientation, 9, 22]).repeat(32, 1)
            f[:, col] = k
            cx, cy = centre_of_mass(ds.render(f))
            moving, still = (cx, cy) if axis == "posX" else (cy, cx)
            errors.append((moving - expected_centre(k)).abs().max())
            slope = np.polyfit(k.numpy(), moving.numpy(), 1)[0]
            assert slope == pytest.approx(1.5, abs=0.01)
            fixed = expected_centre(torch.tensor([22 if axis == "posX" else 9]))
            errors.append((still - fixed).abs().max())  # the other coordinate stays put
    assert max(errors) < 0.35  # rasterisation error of the centroid, in pixels


@pytest.mark.parametrize("shape", [0, 1, 2], ids=["square", "ellipse", "heart"])
def test_area_grows_with_scale_squared(ds, shape):
    scales = np.linspace(0.5, 1, 6)
    areas = []
    for s in range(6):
        f = torch.tensor([shape, s, 0, 16, 16]).repeat(40, 1)
        f[:, 2] = torch.arange(40)
        areas.append(float(ds.render(f).sum((1, 2, 3)).double().mean()))
    areas = np.array(areas)
    np.testing.assert_allclose(areas, AREA_AT_SCALE_1[shape] * scales**2, rtol=0.05)
    assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.06)


def test_orientation_period_and_symmetries(ds):
    def img(shape, orientation):
        return ds.render(torch.tensor([[shape, 5, orientation, 16, 16]]))[0, 0]

    for shape in range(3):
        # the original's orientation grid holds both 0 and 2 pi: identical images
        assert torch.equal(img(shape, 0), img(shape, 39))
        assert not torch.equal(img(shape, 0), img(shape, 3))
    # step 2 pi / 39: orientation 10 is 92.3 degrees, 20 is 184.6, 5 is 46.2
    assert iou(img(0, 0), img(0, 10)) > 0.8  # the square is 4-fold symmetric
    assert iou(img(0, 0), img(0, 5)) < 0.75
    assert iou(img(1, 0), img(1, 20)) > 0.8  # the ellipse is 2-fold symmetric
    assert iou(img(1, 0), img(1, 10)) < 0.5
    # the heart has no rotational symmetry: no other orientation comes close to orientation 0
    assert max(iou(img(2, 0), img(2, o)) for o in range(1, 39)) < 0.9
    assert iou(img(2, 0), img(2, 20)) < iou(img(1, 0), img(1, 20)) - 0.15
    heart = {img(2, o).numpy().tobytes() for o in range(39)}
    assert len(heart) == 39


@pytest.mark.parametrize(
    "orientation, direction",
    [(0, (0, 1)), (10, (1, 0)), (20, (0, -1)), (29, (-1, 0))],
    ids=["0-down", "92-right", "185-up", "268-left"],
)
def test_heart_tip_turns_counter_clockwise(ds, orientation, direction):
    # The tip points down at orientation 0; a counter-clockwise turn as displayed moves it
    # right, then up, then left. The heart's mass sits in its lobes, so the centre of its
    # bounding box lies on the tip's side of its centroid (by 0.21 d = 1.4 px at scale 1).
    im = ds.render(torch.tensor([[2, 5, orientation, 16, 16]]))[0, 0]
    rows, cols = torch.nonzero(im, as_tuple=True)
    cx, cy = centre_of_mass(im[None])
    bx = (cols.min() + cols.max() + 1) / 2
    by = (rows.min() + rows.max() + 1) / 2
    dx, dy = float(bx - cx), float(by - cy)
    unit = torch.tensor([dx, dy], dtype=torch.float64) / math.hypot(dx, dy)
    assert float(unit @ torch.tensor(direction, dtype=torch.float64)) > 0.9


def test_render_takes_factors_or_indices_and_is_deterministic(ds):
    idx = torch.tensor(STRIDE_EDGES)
    by_index = ds.render(idx)
    assert torch.equal(by_index, ds.render(DSprites.index_to_factors(idx)))
    assert torch.equal(by_index, ds.render(idx.numpy()))
    assert torch.equal(by_index.reshape(len(idx), -1), ds.images(idx))
    mod._mask_bank.cache_clear()  # rebuild the bank from scratch
    assert torch.equal(by_index, DSprites().render(idx))
    assert ds.render(torch.zeros(0, dtype=torch.long)).shape == (0, 1, 64, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_rendering_equals_cpu(ds):
    idx = torch.randint(N, (4096,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(DSprites("cuda").images(idx).cpu(), ds.images(idx))


# -------------------------------------------------------------------- sampling for metrics


def test_sample_factors_are_uniform_and_seeded():
    f = DSprites.sample_factors(30_000, torch.Generator().manual_seed(0))
    assert f.shape == (30_000, 5) and f.dtype == torch.int64
    for col, size in enumerate(SIZES):
        counts = torch.bincount(f[:, col], minlength=size).double()
        assert counts.numel() == size
        expected = 30_000 / size
        assert float((counts - expected).abs().max()) < 5 * math.sqrt(expected)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(DSprites.sample_factors(50, g1), DSprites.sample_factors(50, g2))


@pytest.mark.parametrize("factor", [*DSprites.factor_names, 2])
def test_sample_fixed_factor_rows_share_exactly_one_factor(factor):
    k = factor if isinstance(factor, int) else DSprites.factor_names.index(factor)
    gen = torch.Generator().manual_seed(k)
    seen = set()
    for _ in range(60):
        f = DSprites.sample_fixed_factor(256, factor, gen)
        assert f.shape == (256, 5)
        assert (f[:, k] == f[0, k]).all()
        for other in set(range(5)) - {k}:
            assert len(torch.unique(f[:, other])) > 1
        seen.add(int(f[0, k]))
    assert seen == set(range(SIZES[k])) or (SIZES[k] > 30 and len(seen) > 20)


# ------------------------------------------------------------------------------ the splits


def test_default_splits_partition_all_images(full):
    assert full.name == "dsprites" and full.binarize is None
    assert full.image_shape == (1, 64, 64) and full.event_shape == (4096,)
    sizes = [len(full.train), len(full.valid), len(full.test)]
    assert sizes == [722_534, 7373, 7373]
    everything = torch.cat([full.train.indices, full.valid.indices, full.test.indices])
    assert torch.equal(torch.sort(everything).values, torch.arange(N))
    assert isinstance(full.train, DSpritesSplit) and isinstance(full.train, data.Dataset)
    assert torch.equal(full.test.y, full.test.indices // 245_760)  # shape labels
    assert full.train.x.shape == (722_534, 4096) and full.train.x.dtype == torch.float32


def test_partition_depends_on_split_seed_not_seed(full):
    other = dsprites(seed=5)
    assert other.seed == 5 and other.train.seed == 5
    assert torch.equal(other.test.indices, full.test.indices)
    assert not torch.equal(dsprites(split_seed=1).test.indices, full.test.indices)


def test_subset_splits_nest_inside_the_full_splits(full):
    small = dsprites(n=5000, valid_fraction=0.1, test_fraction=0.1)
    big = dsprites(valid_fraction=0.1, test_fraction=0.1)
    assert [len(small.train), len(small.valid), len(small.test)] == [4000, 500, 500]
    for part in ("train", "valid", "test"):
        mine = getattr(small, part).indices
        assert torch.isin(mine, getattr(big, part).indices).all()
    assert dsprites(n=100, valid_fraction=0, test_fraction=0).valid is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"valid_fraction": 0.6, "test_fraction": 0.5}, "sum|< 1"),
        ({"n": 0}, "n must"),
        ({"n": N + 1}, "n must"),
        ({"seed": -1}, "seed"),
        ({"labels": "colour"}, "labels"),
    ],
    ids=["valid-1", "test-neg", "sum", "n0", "n-big", "seed", "labels"],
)
def test_bad_split_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dsprites(**kwargs)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_index_exactly_once_per_epoch(shuffle):
    train = dsprites(n=600, labels="index").train  # 588 images: 5 batches of 100 and one of 88
    renderer = DSprites()
    orders = []
    for seed in (0, 1, 0):
        xs, ys = zip(
            *train.batches(100, shuffle=shuffle, generator=torch.Generator().manual_seed(seed)),
            strict=True,
        )
        assert [len(y) for y in ys] == [100] * 5 + [88]
        x, y = torch.cat(xs), torch.cat(ys)
        assert x.shape == (588, 4096) and x.dtype == torch.float32
        assert torch.equal(x, renderer.images(y))  # each row is the image of its label
        assert torch.equal(torch.sort(y).values, torch.sort(train.indices).values)
        orders.append(y)
    assert torch.equal(orders[0], orders[2])  # same generator seed, same order
    if shuffle:
        assert not torch.equal(orders[0], orders[1])
    else:
        assert torch.equal(orders[0], train.indices) and torch.equal(orders[1], train.indices)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(3, id="int"),
        pytest.param(-1, id="negative-int"),
        pytest.param(slice(2, 9), id="slice"),
        pytest.param(slice(None, None, 7), id="strided"),
        pytest.param(torch.tensor([5, 0, 5, 11]), id="tensor"),
        pytest.param([1, 2], id="list"),
        pytest.param(torch.arange(50) % 3 == 0, id="bool-mask"),
        pytest.param((slice(0, 4), slice(100, 200)), id="rows-cols"),
        pytest.param((7, 2080), id="pixel"),
    ],
)
def test_lazy_x_indexing_matches_dense_rendering(key):
    split = dsprites(n=50, valid_fraction=0, test_fraction=0).train
    reference = DSprites().images(split.indices)  # [40 + 10, 4096]
    got = split.x[key]
    assert isinstance(got, torch.Tensor)
    assert torch.equal(got, reference[key])


def test_whole_split_rendering_is_refused_beyond_the_limit(full):
    for call in (full.train.x.dense, lambda: full.train.x.reshape(-1, 1, 64, 64)):
        with pytest.raises(ValueError, match="GiB.*batches"):
            call()
    small = full.test.subset(300)
    assert isinstance(small, DSpritesSplit) and len(small) == 300
    assert torch.equal(small.indices, full.test.indices[:300])
    dense = small.dense()
    assert type(dense) is data.Dataset and dense.x.shape == (300, 4096)
    assert torch.equal(dense.x, DSprites().images(small.indices))
    assert torch.equal(small.x.reshape(300, 1, 64, 64), dense.x.reshape(300, 1, 64, 64))
    assert np.asarray(small.x).shape == (300, 4096)
    with pytest.raises(ValueError, match="GiB"):
        small.x.dense(max_bytes=1000)


def test_split_behaves_like_a_dataset_for_the_trainer(full):
    train = full.train
    assert train.eval_view() is train  # binary already: the evaluation view is itself
    moved = train.to("cpu")
    assert isinstance(moved, DSpritesSplit) and torch.equal(moved.indices, train.indices)
    # the trainer's max_train_examples: replace x by its first rows (rendered: 512 x 16 KiB)
    cut = dataclasses.replace(train, x=train.x[:512], y=train.y[:512])
    assert len(cut) == 512 and cut.x.shape == (512, 4096)
    x, _ = next(cut.batches(64, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (64, 4096)
    with pytest.raises(TypeError, match="rendered"):
        cut.factors()
    f = full.valid.factors()
    assert torch.equal(f, DSprites.index_to_factors(full.valid.indices))
    assert torch.equal(full.valid.factor_values(), DSprites.factor_values(f))
    assert "lazy" in repr(train) and "722534" in repr(train)


def test_split_memory_is_indices_and_labels_only(full):
    held = 0
    for part in (full.train, full.valid, full.test):
        held += part.indices.numel() * part.indices.element_size()
        held += part.y.numel() * part.y.element_size()
    assert held == 16 * N  # 11.8 MB, against 12 GB of float32 images
    bank = full.train.renderer._bank
    assert bank.numel() * bank.element_size() < 5 * 2**20


_MEMORY_SCRIPT = """
import json, os
import torch
torch.set_num_threads(1)
import vaekit.data as data

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

before = rss()
splits = data.dsprites()
gen = torch.Generator().manual_seed(0)
shapes = [tuple(x.shape) for _, (x, y) in zip(range(10), splits.train.batches(256, generator=gen))]
after = rss()
with open("/proc/self/status") as f:  # VmHWM: peak RSS of this process image
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
print(json.dumps({"before": before, "after": after, "peak": peak, "shapes": shapes}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm and status")
def test_constructing_and_iterating_keeps_memory_small():
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["shapes"] == [[256, 4096]] * 10
    mb = 2**20
    assert (m["after"] - m["before"]) / mb < 200
    assert (m["peak"] - m["before"]) / mb < 200


# ---------------------------------------------------------------------- CLI end to end


def test_load_data_knows_dsprites():
    from vaekit.config import TrainConfig
    from vaekit.training.run import DATASETS, load_data

    assert "dsprites" in DATASETS
    splits = load_data(TrainConfig(dataset="dsprites", seed=3))
    assert splits.name == "dsprites" and splits.seed == 3 and len(splits.test) == 7373


def test_cli_trains_and_evaluates_a_conv_vae_on_dsprites(tmp_path, monkeypatch):
    from vaekit.cli import main

    # The CLI path end to end on a 4,096-image subset, so the validation and test passes are
    # quick (the full test split, 7,373 images, is the same code with more rows).
    monkeypatch.setattr(data, "dsprites", partial(dsprites, n=4096))
    out = tmp_path / "run"
    args = ["train", "--dataset", "dsprites", "--network", "conv", "--epochs", "1"]
    args += ["--max-train-examples", "512", "--batch-size", "64", "--eval-samples", "2"]
    args += ["--latent-dim", "4", "--out", str(out), "--quiet"]
    main(args)
    result = json.loads((out / "eval.json").read_text())
    assert result["examples"] == 41 and math.isfinite(result["nll"])
    assert (out / "reconstructions.png").is_file()
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 8  # 512 / 64
    # the disentanglement metrics of the trained encoder's posterior means, on 2,000 factor
    # draws instead of 10,000 (the metrics' sizes scale with n; the CLI path is the same), DCI's
    # boosted trees on 300, and the fast variants too
    from vaekit.training import run as run_module

    scores_of = partial(run_module.disentanglement_scores, n=2000, n_dci=300, fast_variants=True)
    monkeypatch.setattr(run_module, "disentanglement_scores", scores_of)
    assert (
        main(["eval", str(out), "--samples", "2", "--metrics", "disentanglement", "--quiet"]) == 0
    )
    scores = json.loads((out / "eval.json").read_text())["disentanglement"]
    keys = {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"}
    keys |= {"dci_informativeness_train", "modularity", "explicitness_train", "explicitness_test"}
    fast = {
        f"fast_dci_logistic_{k}" for k in ("disentanglement", "completeness", "informativeness")
    }
    assert keys | fast | {"fast_sap_nearest_mean", "factor_vae", "beta_vae"} == set(scores)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # 8 steps of training already give codes that predict the factors better than chance
    # (a classifier that guesses: mean of 1 / factor size = 0.118); the linear read-out of the
    # fast variant, and the explicitness ROC-AUC above its chance level 1/2
    chance = float(np.mean([1 / n for n in (3, 6, 40, 32, 32)]))
    assert scores["fast_dci_logistic_informativeness"] > 1.5 * chance
    assert scores["explicitness_test"] > 0.55
