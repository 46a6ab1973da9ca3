"""M2 (Kingma et al. 2014): the loss against Pyro's TraceEnum_ELBO, the enumeration against a
loop over classes, the balanced label draw, accuracy and the NLL with y summed out against
brute force, and the CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaekit.cli import main
from vaekit.models.m2 import (
    LabelledInput,
    balanced_labels,
    build_m2,
    class_accuracy,
    log_likelihood,
)
from vaekit.objectives import M2Objective
from vaekit.objectives.m2 import UNLABELLED

C, X, D = 3, 6, 2  # classes, pixels, latents of the tiny models


def _tiny(dtype=torch.float64, latent_dim=D, seed=0, hidden=(5,)):
    torch.manual_seed(seed)
    return build_m2((X,), C, latent_dim=latent_dim, hidden=hidden).to(dtype)


def _batch(n=7, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, X, generator=g, dtype=dtype)
    y = torch.randint(C, (n,), generator=g)
    return x, y


# -- Pyro's ss-vae model and guide (examples/vae/ss_vae_M2.py), on vaekit's networks ---------


def _pyro_ss_vae(model):
    """The tutorial's model/guide/model_classify with ``model``'s networks (logits, log-var)."""
    pyro = pytest.importorskip("pyro")
    dist = pytest.importorskip("pyro.distributions")

    def onehot(ys):
        return None if ys is None else torch.nn.functional.one_hot(ys, C).to(torch.float64)

    def p_model(xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            zs = pyro.sample(
                "z",
                dist.Normal(xs.new_zeros(xs.shape[0], D), xs.new_ones(xs.shape[0], D)).to_event(1),
            )
            prior = xs.new_ones(xs.shape[0], C) / C
            ys = pyro.sample("y", dist.OneHotCategorical(prior), obs=onehot(ys))
            logits = model.decoder(zs, ys)
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=xs)

    def guide(xs, ys=None):
        with pyro.plate("data", xs.shape[0]):
            if ys is None:
                ys = pyro.sample("y", dist.OneHotCategorical(logits=model.classify(xs)))
            else:
                ys = onehot(ys)
            mean, logvar = model.encoder(xs, ys).chunk(2, -1)
            pyro.sample("z", dist.Normal(mean, (0.5 * logvar).exp()).to_event(1))

    def model_classify(xs, ys, alpha):
        with pyro.plate("data", xs.shape[0]), pyro.poutine.scale(scale=alpha):
            pyro.sample("y_aux", dist.OneHotCategorical(logits=model.classify(xs)), obs=onehot(ys))

    return pyro, p_model, guide, model_classify


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # labelled: no y site
def test_m2_loss_matches_pyro_trace_enum_elbo():
    model = _tiny()
    x, y = _batch()
    pyro, p_model, guide, model_classify = _pyro_ss_vae(model)
    from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    enum_guide = config_enumerate(guide, "parallel")
    objective = M2Objective(alpha=46.0, kl="mc", reduction="sum")
    for seed in range(3):
        # unlabelled: y summed out in one [C, B] pass; the same z draws (same seed, same shape)
        torch.manual_seed(seed)
        ours = objective(model, x).loss
        torch.manual_seed(seed)
        theirs = elbo.differentiable_loss(p_model, enum_guide, x)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
        # labelled: -ELBO(x, y) + alpha (-log q(y|x)), Pyro's auxiliary loss as a second SVI loss
        torch.manual_seed(seed)
        ours = objective(model, x, y=y).loss
        torch.manual_seed(seed)
        theirs = elbo.differentiable_loss(p_model, enum_guide, x, y)
        theirs = theirs + Trace_ELBO().differentiable_loss(
            lambda a, b: model_classify(a, b, 46.0), lambda a, b: None, x, y
        )
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-10)
    # a mixed batch is the sum of its labelled and unlabelled parts
    mixed = y.clone()
    mixed[::2] = UNLABELLED
    lab = mixed >= 0
    torch.manual_seed(0)
    out = objective.replace(reduction="none")(model, x, y=mixed)
    torch.manual_seed(0)
    part_l = objective.replace(reduction="none")(model, x[lab], y=y[lab])
    part_u = objective.replace(reduction="none")(model, x[~lab])
    assert out.per_example["labelled"].tolist() == lab.double().tolist()
    # labelled rows are drawn first, so their z are the same draws; unlabelled ones differ
    torch.testing.assert_close(out.per_example["loss"][lab], part_l.per_example["loss"])
    assert out.per_example["loss"][~lab].shape == part_u.per_example["loss"].shape


def test_enumerated_u_equals_a_loop_over_classes():
    """U(x) from the batched [C, B] pass vs a Python loop of per-class forward passes (one-hot
    through the full first layer) on the same z draws: rec, KL and entropy by hand."""
    model = _tiny()
    x, _ = _batch(9)
    objective = M2Objective(reduction="none")  # analytic KL(q(z|x,y) || N(0, I))
    torch.manual_seed(3)
    out = objective(model, x)
    torch.manual_seed(3)
    z = model.enumerate(x).z[0]  # [C, B, D]: the draws the objective used
    probs = torch.softmax(model.classify(x), -1)
    u = torch.zeros(x.shape[0], dtype=torch.float64)
    for c in range(C):
        yc = torch.full((x.shape[0],), c)
        onehot = torch.nn.functional.one_hot(yc, C).double()
        h = model.encoder.rest(
            torch.cat([x, onehot], -1)
            @ torch.cat([model.encoder.first_a.weight, model.encoder.first_y.weight], 1).T
            + model.encoder.first_a.bias
        )
        mean, logvar = h.chunk(2, -1)
        var = logvar.exp()
        kl = 0.5 * (var + mean**2 - 1 - logvar).sum(-1)  # closed form, by hand
        logits = model.decode(z[c], yc).base_dist.logits
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
        u += probs[:, c] * (rec.sum(-1) + kl + math.log(C))
    entropy = -(probs * probs.log()).sum(-1)
    u -= entropy
    torch.testing.assert_close(out.per_example["loss"], u, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(-out.per_example["bound"], u, rtol=1e-12, atol=1e-10)


def test_labelled_input_enumerate_equals_forward_on_each_one_hot():
    torch.manual_seed(0)
    net = LabelledInput(4, 5, 3, (7, 6), activation="tanh").double()
    a = torch.randn(2, 4, dtype=torch.float64)
    every = net.enumerate(a)  # [C, B, 3]
    for c in range(5):
        onehot = torch.zeros(2, 5, dtype=torch.float64)
        onehot[:, c] = 1
        torch.testing.assert_close(every[c], net(a, onehot))


def test_relaxed_estimator_averages_to_the_enumerated_u_at_low_temperature():
    """Gumbel-softmax y at temperature 0.02: argmax y ~ q(y|x) exactly (Gumbel-max), the
    relaxation nearly one-hot, so the mean over many draws approaches the exact U(x)."""
    model = _tiny()
    x, _ = _batch(2)
    reps = x.repeat(4000, 1)
    exact = M2Objective(reduction="none")
    relaxed = M2Objective(estimator="relaxed", relaxed_temperature=0.02, reduction="none")
    torch.manual_seed(0)
    u = exact(model, x.repeat(500, 1)).per_example["loss"].reshape(500, 2).mean(0)
    torch.manual_seed(1)
    r = relaxed(model, reps).per_example["loss"].reshape(4000, 2)
    stderr = r.std(0) / math.sqrt(4000)
    assert ((r.mean(0) - u).abs() < 4 * stderr + 0.05).all(), (r.mean(0), u, stderr)


# -- labels -------------------------------------------------------------------------------------


def test_balanced_labels_draw_is_balanced_seeded_and_without_repeats():
    g = np.random.default_rng(0)
    y = torch.from_numpy(g.integers(0, 4, 500))
    idx = balanced_labels(y, 22, seed=5)
    counts = np.bincount(y[idx].numpy(), minlength=4)
    assert sorted(counts.tolist()) == [5, 5, 6, 6] and counts[:2].tolist() == [6, 6]
    assert len(set(idx.tolist())) == 22
    assert torch.equal(idx, balanced_labels(y, 22, seed=5))
    assert not torch.equal(idx, balanced_labels(y, 22, seed=6))
    with pytest.raises(ValueError, match="number of classes"):
        balanced_labels(y, 3)
    with pytest.raises(ValueError, match="training set's size"):
        balanced_labels(y, 501)
    with pytest.raises(ValueError, match="class 0"):
        balanced_labels(torch.tensor([0, 1, 1, 1, 1, 1]), 4)


# -- evaluation against brute force ---------------------------------------------------------------


def test_log_likelihood_with_y_summed_out_matches_quadrature():
    """One latent dimension: log p(x) = log sum_y p(y) int p(x|y,z) N(z; 0, 1) dz by a dense
    trapezoid grid, against the importance-sampled estimate."""
    model = _tiny(latent_dim=1, seed=2)
    x, _ = _batch(4, seed=4)
    zs = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    exact = []
    for i in range(x.shape[0]):
        per_class = []
        for c in range(C):
            px = model.decode(zs[:, None], torch.full((zs.shape[0],), c))
            f = (px.log_prob(x[i]) + torch.distributions.Normal(0.0, 1.0).log_prob(zs)).exp()
            per_class.append(torch.trapezoid(f, zs) / C)
        exact.append(torch.stack(per_class).sum().log())
    exact = torch.stack(exact)
    torch.manual_seed(0)
    estimate = log_likelihood(model, x, samples=20000)  # Monte Carlo s.d. about 0.01 nats
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.05)


def test_accuracy_and_confusion_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    model = _tiny()
    x, y = _batch(50, seed=7)
    acc, confusion = class_accuracy(model, x, y, batch_size=16)
    pred = model.classify(x).argmax(-1).numpy()
    assert acc == pytest.approx(metrics.accuracy_score(y.numpy(), pred))
    expected = metrics.confusion_matrix(y.numpy(), pred, labels=list(range(C)))
    assert confusion.numpy().tolist() == expected.tolist()


def test_objective_rejects_bad_labels():
    model = _tiny()
    x, _ = _batch(3)
    objective = M2Objective()
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        objective(model, x, y=torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="shape"):
        objective(model, x, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        objective(model, x, y=torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="estimator"):
        M2Objective(estimator="sample")


# -- CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def blocks_npz(tmp_path):
    """28x28 images of 3 classes: class c lights rows 4 + 8c .. 9 + 8c, columns 6..21."""
    g = np.random.default_rng(0)
    idx = np.arange(28)
    arrays = {}
    for split, n in (("train", 150), ("valid", 30), ("test", 60)):
        y = g.integers(0, 3, n)
        rows = (idx >= 4 + 8 * y[:, None]) & (idx < 10 + 8 * y[:, None])  # [n, 28]
        lit = rows[:, :, None] & ((idx >= 6) & (idx < 22))[None, None, :]
        arrays[split] = np.where(lit, 0.95, 0.05 * g.random((n, 28, 28))).astype(np.float32)
        arrays[f"{split}_labels"] = y
    path = tmp_path / "blocks.npz"
    np.savez(path, **arrays)
    return path


def _flags(path, out, *extra):
    return [
        "train", "--dataset", "file", "--data-root", str(path), "--binarize", "none",
        "--hidden", "32", "--latent-dim", "3", "--epochs", "6", "--batch-size", "25",
        "--lr", "0.003", "--eval-samples", "6", "--no-tensorboard", "--quiet", "--out", str(out),
        *extra,
    ]  # fmt: skip


def test_cli_m2_trains_evaluates_and_reports(blocks_npz, tmp_path):
    out = tmp_path / "run"
    assert main(_flags(blocks_npz, out, "--model", "m2", "--labels", "6", "--label-seed", "1")) == 0
    result = json.loads((out / "eval.json").read_text())
    # three well-separated classes: 6 labels and the unlabelled rest suffice
    assert result["accuracy"] > 0.9
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 1.0
    assert np.array(result["confusion"]).sum() == 60
    assert result["samples_per_class"] == 2
    for name in ("analogies.png", "confusion.png", "samples.png", "report.html"):
        assert (out / name).exists(), name
    report = (out / "report.html").read_text()
    assert "analogies.png" in report and "test accuracy" in report
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["labels"] == 6 and saved["objective"]["objective"] == "m2"
    assert saved["objective"]["alpha"] == 46.0
    # samples of one class, or of y ~ p(y); a class out of range is refused
    assert (
        main(["sample", str(out), "--n", "4", "--label", "2", "--out", str(tmp_path / "2.png")])
        == 0
    )
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "any.png")]) == 0
    assert main(["sample", str(out), "--n", "4", "--label", "3"]) == 2


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--model", "m2", "--labels", "2"], "number of classes"),
        (["--model", "m2"], "--labels"),
        (["--model", "m2", "--labels", "151"], "training set's size"),
        (["--labels", "10"], "labels"),
        (["--model", "m2", "--labels", "6", "--objective", "iwae"], "m2"),
        (["--model", "m2", "--labels", "6", "--objective", "elbo"], "received objective 'elbo'"),
        (["--model", "vae", "--objective", "m2"], "m2"),
    ],
    ids=["fewer-than-classes", "missing", "more-than-train", "not-m2", "iwae", "elbo", "m2-on-vae"],
)
def test_cli_m2_refuses_bad_inputs(blocks_npz, tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert main(_flags(blocks_npz, out, *extra)) == 2
    assert needle in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()


def test_cli_m2_refuses_data_without_labels(tmp_path, capsys):
    g = np.random.default_rng(0)
    path = tmp_path / "nolabels.npz"
    np.savez(
        path,
        train=g.random((40, 28, 28)),
        valid=g.random((10, 28, 28)),
        test=g.random((10, 28, 28)),
    )
    assert main(_flags(path, tmp_path / "run", "--model", "m2", "--labels", "10")) == 2
    assert "labels" in capsys.readouterr().err


def test_generic_vae_code_on_m2_gets_a_clear_error():
    from vaekit.evaluate import log_likelihood as vae_log_likelihood

    model = _tiny()
    x, _ = _batch(2)
    with pytest.raises(ValueError, match="summed out"):
        vae_log_likelihood(model, x, samples=2)


def test_confusion_figure_refuses_a_non_square_matrix(tmp_path):
    from vaekit.plots import save_confusion

    with pytest.raises(ValueError, match="square"):
        save_confusion([[1, 2, 3], [4, 5, 6]], tmp_path / "c.png")


def test_cli_m2_relaxed_estimator_with_a_mixture_prior(blocks_npz, tmp_path):
    out = tmp_path / "run"
    flags = ["--model", "m2", "--labels", "9", "--estimator", "relaxed", "--prior", "mog"]
    assert main(_flags(blocks_npz, out, *flags, "--components", "3")) == 0
    result = json.loads((out / "eval.json").read_text())
    assert math.isfinite(result["nll"]) and 0 <= result["accuracy"] <= 1
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["objective"]["estimator"] == "relaxed" and saved["objective"]["kl"] == "auto"
