"""Issue 15, second round: bad data files, labels, data paths and Python API misuse.

Every case is a ValueError (or DataNotFoundError) naming the file or argument, what was
expected and what was received; never a raw numpy/PIL/torch exception.
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vaekit import VAE, data
from vaekit.priors import LearnableGaussian, StandardNormal

_OK = (ValueError, data.DataNotFoundError)


def _images(n: int = 6, d: int = 4) -> np.ndarray:
    return np.random.default_rng(0).random((n, d)).astype(np.float32)


def _refused(path: Path, *fragments: str) -> str:
    with pytest.raises(_OK) as info:
        data.from_file(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- 1. data files


def test_complex_npy_is_refused_not_truncated_to_its_real_part(tmp_path):
    path = tmp_path / "c.npy"
    np.save(path, _images() + 1j * _images())
    _refused(path, "train must hold real numbers", "complex64")


def test_complex_npz_member_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, train=_images(), valid=(_images() + 1j).astype(np.complex64))
    _refused(path, "valid must hold real numbers", "complex64")


def test_complex_tensor_is_refused_by_from_tensor():
    with pytest.raises(ValueError, match=r"train must hold real numbers.*complex"):
        data.from_tensor(torch.rand(3, 4, dtype=torch.complex64))


def test_structured_dtype_npy_is_refused(tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))
    _refused(path, "train must hold real numbers", "('a', '<f4')")


def test_string_npy_is_refused(tmp_path):
    path = tmp_path / "u.npy"
    np.save(path, np.array([["a", "b"]]))
    _refused(path, "train must hold real numbers", "<U1")


def test_zero_byte_npy_is_refused(tmp_path):
    path = tmp_path / "empty.npy"
    path.write_bytes(b"")
    _refused(path, "path must be a .npy file", "0 bytes")


def test_truncated_npy_is_refused_with_the_byte_counts(tmp_path):
    path = tmp_path / "cut.npy"
    np.save(path, _images())
    path.write_bytes(path.read_bytes()[:-10])
    _refused(path, "train must hold 96 bytes", "received 86 bytes", "truncated")


def test_truncated_npz_is_refused(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, train=_images())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    _refused(path, "path must be a .npz archive")


def test_npz_header_claiming_more_data_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "liar.npz"
    buf = tmp_path / "member.npy"
    np.save(buf, _images())
    blob = buf.read_bytes().replace(b"(6, 4)", b"(9, 4)")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.npy", blob)
    _refused(path, "train must hold 144 bytes", "received 96 bytes")


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">u1", ">i2"])
def test_big_endian_npy_is_read_correctly(tmp_path, dtype):
    path = tmp_path / "be.npy"
    values = _images() if dtype[1] == "f" else (_images() > 0.5)
    np.save(path, values.astype(dtype))
    loaded = data.from_file(path).train.x.numpy()
    expected = values.astype(np.float32)
    if dtype == ">u1":
        expected = expected / 255.0
    np.testing.assert_allclose(loaded, expected, rtol=1e-6)


def test_missing_npy_is_data_not_found_naming_the_file(tmp_path):
    path = tmp_path / "nowhere.npy"
    with pytest.raises(data.DataNotFoundError, match="must name an existing file"):
        data.from_file(path)


def _png_folder(tmp_path: Path) -> Path:
    import matplotlib.image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        matplotlib.image.imsave(folder / f"{i}.png", _images(4, 4), cmap="gray")
    return folder


def test_png_with_a_damaged_chunk_is_refused_naming_the_file(tmp_path):
    folder = _png_folder(tmp_path)
    bad = folder / "1.png"
    blob = bytearray(bad.read_bytes())
    blob[40] ^= 0xFF  # inside the chunk after IHDR: its type or CRC no longer matches
    bad.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="path must be a PNG or JPEG image") as info:
        data.from_folder(folder)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("keep", [0, 8, 30, 0.5])
def test_truncated_png_is_refused_naming_the_file(tmp_path, keep):
    folder = _png_folder(tmp_path)
    bad = folder / "2.png"
    blob = bad.read_bytes()
    bad.write_bytes(blob[: int(len(blob) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match="path must be a PNG or JPEG image") as info:
        data.from_folder(folder)
    assert str(bad) in str(info.value)


def test_negative_labels_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "lab.npz"
    np.savez(path, train=_images(5), train_labels=np.array([0, 1, -1, 0, 1]))
    _refused(path, "train_labels must be class indices in 0..C-1", "minimum -1")


@pytest.mark.parametrize("key", ["valid", "test"])
def test_eval_label_outside_the_training_labels_is_refused_at_load(tmp_path, key):
    path = tmp_path / "lab.npz"
    np.savez(
        path,
        train=_images(5),
        train_labels=np.array([0, 1, 2, 0, 1]),
        **{key: _images(2), f"{key}_labels": np.array([1, 7])},
    )
    _refused(path, f"{key}_labels must be classes seen in train_labels, 0..2", "[7]")


def test_non_finite_and_huge_float_labels_are_refused():
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="train_labels must hold integer class labels"):
        data.from_tensor(x, train_labels=np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="train_labels must be class indices that fit in int64"):
        data.from_tensor(x, train_labels=np.array([0.0, 1e30]))


def _check_failure(path: Path) -> None:
    try:
        data.from_file(path)
    except _OK as err:
        assert str(path) in str(err), f"{type(err).__name__} without the file name: {err}"
    except Exception as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{path.name}: {type(err).__name__} escaped: {err}")


def test_fuzz_file_loaders_with_random_and_garbled_bytes(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, train=_images(), train_labels=np.arange(6), valid=_images(2))
    good_npz = good.read_bytes()
    one = tmp_path / "good.npy"
    np.save(one, _images())
    good_npy = one.read_bytes()
    rng = random.Random(15)
    for i in range(200):
        kind = i % 4
        if kind == 0:  # random bytes
            blob = rng.randbytes(rng.randrange(300))
        elif kind == 1:  # a .npy magic followed by garbage
            blob = np.lib.format.magic(1, 0) + rng.randbytes(rng.randrange(300))
        else:  # a valid file with a few bytes flipped
            blob = bytearray(good_npz if kind == 2 else good_npy)
            for _ in range(rng.randrange(1, 8)):
                blob[rng.randrange(len(blob))] = rng.randrange(256)
            blob = bytes(blob)
        suffix = ".npy" if kind in (1, 3) or rng.random() < 0.5 else ".npz"
        path = tmp_path / f"fuzz{i}{suffix}"
        path.write_bytes(blob)
        _check_failure(path)
    for cut in range(0, len(good_npz), 37):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(good_npz[:cut])
        _check_failure(path)
    for cut in range(0, len(good_npy), 7):
        path = tmp_path / f"cut{cut}.npy"
        path.write_bytes(good_npy[:cut])
        _check_failure(path)


def test_fuzz_idx_and_image_loaders(tmp_path):
    rng = random.Random(16)
    folder = _png_folder(tmp_path)
    png = (folder / "0.png").read_bytes()
    for i in range(60):
        blob = rng.randbytes(rng.randrange(64)) if i % 2 else png[: rng.randrange(len(png))]
        idx = tmp_path / f"idx{i}"
        idx.write_bytes(b"\x00\x00\x08\x03" + blob if i % 3 else blob)
        try:
            data.read_idx(idx)
        except ValueError as err:
            assert str(idx) in str(err)
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(err).__name__} escaped read_idx: {err}")
        (folder / "1.png").write_bytes(blob)
        try:  # a PNG cut only in its IEND trailer still decodes; anything else is refused
            data.from_folder(folder)
        except ValueError as err:
            assert str(folder / "1.png") in str(err)
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{type(err).__name__} escaped from_folder: {err}")


# ---------------------------------------------------------------- 2. data paths


@pytest.mark.parametrize("root", [".", "..", "data", "data/sub/.."])
@pytest.mark.parametrize("name", ["../outside.npz", "../../x.npz", "a/../../x.npz"])
def test_relative_data_root_cannot_leave_a_relative_data_directory(
    tmp_path, monkeypatch, root, name
):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("VAEKIT_DATA", root)
    with pytest.raises(ValueError, match="data_root must be a path inside the data directory"):
        data.resolve_data_path(data.data_dir(), name, what="data_root")


def test_relative_data_directory_still_accepts_paths_inside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEKIT_DATA", ".")
    assert data.resolve_data_path(data.data_dir(), "a/../b.npz") == Path("b.npz")
    monkeypatch.setenv("VAEKIT_DATA", "..")
    assert data.resolve_data_path(data.data_dir(), "x.npz") == Path("../x.npz")


# ---------------------------------------------------------------- 3. model API misuse


def _model(prior: nn.Module | None = None, latent: int = 4) -> VAE:
    torch.manual_seed(0)
    return VAE(
        nn.Linear(16, 2 * latent),
        nn.Linear(latent, 16),
        prior=StandardNormal(latent) if prior is None else prior,
    )


@pytest.mark.parametrize("prior", [LearnableGaussian(1), StandardNormal(3)])
def test_prior_dimension_must_match_the_latent_dimension(prior):
    with pytest.raises(ValueError, match=r"prior must have the posterior's latent dimension 4"):
        _model(prior)(torch.rand(2, 16))


def test_prior_passed_to_forward_must_match_too():
    model = _model()
    with pytest.raises(
        ValueError, match=r"prior must .* dimension 4; received a prior of dimension 2"
    ):
        model(torch.rand(2, 16), prior=StandardNormal(2)())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_x_is_refused_naming_the_dtype(dtype):
    with pytest.raises(ValueError, match=rf"x must be a floating-point tensor.*{dtype}"):
        _model()(torch.ones(2, 16, dtype=dtype))


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match=r"x must be a batch .* received shape \(0, 16\)"):
        _model()(torch.rand(0, 16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_x_is_reported_as_x(bad):
    x = torch.rand(2, 16)
    x[1, 3] = bad
    with pytest.raises(ValueError, match=r"^x must be finite"):
        _model()(x)


def test_non_finite_x_check_is_off_when_validation_is_off():
    from vaekit._checks import validation

    x = torch.rand(2, 16)
    x[0, 0] = float("nan")
    with validation(False):
        out = _model()(x)  # the trainer's hot loop: no host sync, no check
    assert out.z.shape == (1, 2, 4)


@pytest.mark.parametrize(
    ("model_dtype", "x_dtype"), [(torch.float64, torch.float32), (torch.float32, torch.float64)]
)
def test_model_and_data_dtypes_must_match(model_dtype, x_dtype):
    model = _model().to(model_dtype)
    with pytest.raises(
        ValueError, match=rf"x must have the model's dtype {model_dtype}.*{x_dtype}"
    ):
        model(torch.rand(2, 16, dtype=x_dtype))


def test_well_formed_input_still_works_in_float64():
    model = _model().double()
    out = model(torch.rand(3, 16, dtype=torch.float64), samples=2)
    assert out.z.shape == (2, 3, 4) and out.z.dtype == torch.float64
