"""Fuzzing (issue 5): config parsing, the CLI flag parser and every formula of
``vaekit.functional`` under arbitrary input.

Contracts checked:
* ``load_config`` with any YAML mapping, any text, any bytes or any flag-like overrides
  returns a RunConfig or raises ValueError; what it returns survives a save/load round trip.
* ``vaekit train`` with arbitrary values for the config flags (and no data on disk) exits
  with status 2 and a one-line message, and creates nothing.
* every ``vaekit.functional`` formula, on arbitrary legal inputs (logits within +-1e4,
  log-variances / log-scales within +-30, means within +-1e4, x in the support, any
  broadcastable shapes, float32 or float64) returns finite values of shape [B] with finite
  gradients; x outside the support is a ValueError naming x, never a NaN.
tests/test_functional.py holds the fixed-shape properties; nothing here repeats them.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vaekit import functional as VF
from vaekit.cli import main
from vaekit.config import ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, load_config
from vaekit.config import config_from_dict as _from_dict

SECTIONS = {"model": ModelConfig, "objective": ObjectiveConfig, "train": TrainConfig}
FIELDS = [f.name for cls in SECTIONS.values() for f in fields(cls)]
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- config: load_config ----------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and +-inf included
    st.text(max_size=12),
    st.sampled_from(["3", "0", "-1", "1e3", "0.5", "inf", "nan", "32,16", "true", "mlp"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
_keys = st.one_of(
    st.sampled_from(FIELDS), st.text(max_size=12), st.integers(-5, 5), st.booleans(), st.none()
)
_flat = st.dictionaries(_keys, _values, max_size=5)
_by_section = st.fixed_dictionaries(
    {},
    optional={
        name: st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from([f.name for f in fields(cls)]), _keys),
                _values,
                max_size=4,
            ),
            _scalars,
        )
        for name, cls in SECTIONS.items()
    },
)


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "config.yaml"


def _check_round_trip(cfg: RunConfig, path) -> None:
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path.write_text(text)
    again = load_config(path)
    assert yaml.safe_dump(again.to_dict(), sort_keys=False) == text
    assert yaml.safe_dump(_from_dict(cfg.to_dict()).to_dict(), sort_keys=False) == text


@FUZZ
@given(data=st.one_of(_flat, _by_section, st.builds(lambda a, b: {**a, **b}, _flat, _by_section)))
def test_fuzz_load_config_mappings(data, yaml_path):
    yaml_path.write_text(yaml.safe_dump(data))
    try:
        cfg = load_config(yaml_path)
    except ValueError as e:
        assert str(e)
        return
    assert isinstance(cfg, RunConfig)
    _check_round_trip(cfg, yaml_path)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_fuzz_load_config_arbitrary_file_contents(text, yaml_path):
    if isinstance(text, bytes):
        yaml_path.write_bytes(text)
    else:
        yaml_path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(yaml_path)
    except ValueError:
        return
    assert isinstance(cfg, RunConfig)


@FUZZ
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=15), max_size=5))
def test_fuzz_flag_like_overrides(overrides, yaml_path):
    # what the CLI hands over: strings
    try:
        cfg = load_config(None, overrides)
    except ValueError:
        return
    _check_round_trip(cfg, yaml_path)


# -- config: the command line -----------------------------------------------------------

_BOOL_FIELDS = {f.name for cls in SECTIONS.values() for f in fields(cls) if f.type == "bool"}
_FLAG_FIELDS = [name for name in FIELDS if name != "dataset"]  # never load a real data set
_flag_values = st.one_of(
    st.text(max_size=15),
    st.sampled_from(["1", "0", "-1", "2.5", "1e9", "nan", "inf", "-inf", "", "300,300", "x"]),
    st.integers(-(10**20), 10**20).map(str),
)


@pytest.fixture(scope="module")
def empty_data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAEKIT_DATA", str(folder))
        yield folder


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flags=st.dictionaries(st.sampled_from(_FLAG_FIELDS), _flag_values, max_size=6))
def test_fuzz_cli_flags_never_crash(flags, empty_data_dir):
    out = empty_data_dir.parent / "fuzz-run"
    argv = ["train", "--dataset", "file", "--data-root", "missing.npz", "--out", str(out)]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if name in _BOOL_FIELDS:
            argv.append(flag if value.startswith(("1", "t", "y")) else "--no-" + flag[2:])
        else:
            argv.append(f"{flag}={value}")  # '=': a value may start with '-'
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: unparseable command line
            code = e.code
    err = stderr.getvalue()
    assert code == 2, err
    assert "Traceback" not in err and err.strip(), err
    assert not out.exists()


# -- vaekit.functional ------------------------------------------------------------------

_BOUND = {"logits": 1e4, "logvar": 30.0, "loc": 1e4}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@st.composite
def _shapes(draw, n_args: int):
    """A full shape [B, ...] (0-2 event axes) and one broadcastable shape per argument."""
    full = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    per_arg = []
    for _ in range(n_args):
        keep = draw(st.lists(st.booleans(), min_size=len(full), max_size=len(full)))
        per_arg.append(tuple(s if k else 1 for s, k in zip(full, keep, strict=True)))
    return per_arg


def _values(draw, kind: str, shape, dtype, bins: int = 256) -> torch.Tensor:
    if kind == "x01":
        elements = st.floats(0.0, 1.0)
    elif kind == "grid":
        idx = draw(arrays(np.int64, shape, elements=st.integers(0, bins - 1)))
        return torch.tensor(-1.0 + 2.0 * idx / (bins - 1), dtype=dtype)
    else:
        bound = _BOUND[kind]
        # the whole legal range, plus the small values where series/branches switch
        elements = st.one_of(st.floats(-bound, bound), st.floats(-0.02, 0.02))
    return torch.tensor(draw(arrays(np.float64, shape, elements=elements)), dtype=dtype)


# name -> (function, argument kinds); x arguments ("x01", "grid") get no gradient
FORMULAS = {
    "kl_normal_std": (VF.kl_normal_std, ["loc", "logvar"]),
    "kl_normal": (VF.kl_normal, ["loc", "logvar", "loc", "logvar"]),
    "bernoulli_log_prob": (VF.bernoulli_log_prob, ["logits", "x01"]),
    "continuous_bernoulli_log_prob": (VF.continuous_bernoulli_log_prob, ["logits", "x01"]),
    "gaussian_log_prob": (VF.gaussian_log_prob, ["loc", "loc", "logvar"]),
    "laplace_log_prob": (VF.laplace_log_prob, ["loc", "loc", "logvar"]),
    "discretized_logistic_log_prob": (VF.discretized_logistic_log_prob, ["grid", "loc", "logvar"]),
}


@pytest.mark.parametrize("name", list(FORMULAS))
@FUZZ
@given(data=st.data(), dtype=st.sampled_from(list(_DTYPES)))
def test_fuzz_formulas_on_legal_input_are_finite_with_finite_gradients(name, data, dtype):
    fn, kinds = FORMULAS[name]
    dt = _DTYPES[dtype]
    shapes = data.draw(_shapes(len(kinds)))
    kwargs = {}
    bins = 256
    if name == "discretized_logistic_log_prob":
        bins = data.draw(st.sampled_from([2, 3, 16, 256, 1024, 65536]))
        kwargs["bins"] = bins
    args = [
        _values(data.draw, kind, shape, dt, bins) for kind, shape in zip(kinds, shapes, strict=True)
    ]
    leaves = [
        a.requires_grad_(kind not in ("x01", "grid")) for a, kind in zip(args, kinds, strict=True)
    ]
    out = fn(*leaves, **kwargs)
    batch = torch.broadcast_shapes(*shapes)[0]
    assert out.shape == (batch,) and out.dtype == dt
    assert torch.isfinite(out).all(), out
    out.sum().backward()
    for leaf in leaves:
        if leaf.requires_grad:
            assert torch.isfinite(leaf.grad).all(), leaf.grad


@FUZZ
@given(data=st.data(), dtype=st.sampled_from(list(_DTYPES)))
def test_fuzz_elementwise_and_reducing_helpers(data, dtype):
    dt = _DTYPES[dtype]
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    logits = _values(data.draw, "logits", shape, dt).requires_grad_(True)
    log_c = VF.continuous_bernoulli_log_norm(logits)
    assert log_c.shape == shape and torch.isfinite(log_c).all()
    # log C(eta) >= log 2, its value at eta = 0 (C is even and grows with |eta|)
    assert (log_c >= math.log(2.0) - 1e-6).all()
    log_c.sum().backward()
    assert torch.isfinite(logits.grad).all()

    t = _values(data.draw, "loc", shape, dt).requires_grad_(True)
    dim = data.draw(st.integers(0, len(shape) - 1))
    lme = VF.log_mean_exp(t, dim)
    assert torch.isfinite(lme).all()
    assert (lme <= t.amax(dim) + 1e-3 * (1 + t.amax(dim).abs())).all()
    lme.sum().backward()
    assert torch.isfinite(t.grad).all()

    log_w = _values(data.draw, "loc", (shape[0], 2), dt).requires_grad_(True)
    bound = VF.iwae_bound(log_w)
    assert bound.shape == (2,) and torch.isfinite(bound).all()
    bound.sum().backward()
    assert torch.isfinite(log_w.grad).all()
    assert VF.sum_event(t.detach()).shape == (shape[0],)


# x arguments with a support: (function building the call from x, lower, upper)
SUPPORT = {
    "bernoulli_log_prob": (lambda x: VF.bernoulli_log_prob(torch.zeros_like(x), x), 0.0, 1.0),
    "continuous_bernoulli_log_prob": (
        lambda x: VF.continuous_bernoulli_log_prob(torch.zeros_like(x), x),
        0.0,
        1.0,
    ),
    "discretized_logistic_log_prob": (
        lambda x: VF.discretized_logistic_log_prob(x, torch.zeros_like(x), torch.zeros_like(x)),
        -1.0,
        1.0,
    ),
    "gaussian_log_prob": (
        lambda x: VF.gaussian_log_prob(x, torch.zeros_like(x), torch.zeros_like(x)),
        -math.inf,
        math.inf,
    ),
    "laplace_log_prob": (
        lambda x: VF.laplace_log_prob(x, torch.zeros_like(x), torch.zeros_like(x)),
        -math.inf,
        math.inf,
    ),
}


@pytest.mark.parametrize("name", list(SUPPORT))
@FUZZ
@given(
    x=arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 4)),
        elements=st.one_of(st.floats(-3.0, 3.0), st.floats(-1e4, 1e4), st.just(np.nan)),
    )
    | arrays(np.float64, (2, 2), elements=st.sampled_from([np.inf, -np.inf, 0.5])),
)
def test_fuzz_x_outside_the_support_is_a_value_error_naming_x(name, x):
    call, low, high = SUPPORT[name]
    xt = torch.tensor(x)
    legal = bool(np.isfinite(x).all() and (x >= low).all() and (x <= high).all())
    if legal:
        assert torch.isfinite(call(xt)).all()
    else:
        with pytest.raises(ValueError, match=r"^x must (be finite|lie in)"):
            call(xt)
