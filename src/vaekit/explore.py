"""``vaekit explore RUN_DIR``: one self-contained page where the decoder runs in the browser.

The page (``RUN_DIR/explore.html``) holds the decoder as a small *program*: a list of layer
operations (dense, gated dense, transposed convolution, activations) and one float32 weight
buffer (base64), run by ~150 lines of plain JavaScript inlined in the page. No runtime is
downloaded or bundled, and a Content-Security-Policy forbids every network request: the file
works offline, from ``file://``, and from the Python package alone (no npm).

:func:`compile_decoder` builds the program from the decoder's modules and refuses
(``ValueError`` naming the layer) anything it cannot run; the likelihood's mean ``E[x|z]``
(a sigmoid for Bernoulli, the continuous-Bernoulli mean, a Gaussian / Laplace location) is
the program's last step, mapped to [0, 1] pixels as :func:`vaekit.latent.decode` with
``unit=True`` does.

Optionally (``runtime="onnxruntime-web"``, ``vaekit explore --runtime onnxruntime-web
--ort-dir DIR``) the decoder and its likelihood mean are exported to ONNX and run by
onnxruntime-web, inlined from its npm ``dist`` folder (JavaScript bundle and WebAssembly
binary: ~18 MB for the default MNIST model with version 1.23.2, against ~1.9 MB).

On the page: sliders over the active latent units (ranked by KL), two test images A and B
with linear or spherical interpolation between their codes, and attribute vectors
(:func:`vaekit.latent.attribute_vectors`) added with a strength. The code shown is
``z = interp(z_A, z_B, t) + sum_k s_k v_k + delta`` (``delta``: the unit sliders' offsets).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaekit._checks import check_choice, validation

__all__ = ["RUNTIMES", "compile_decoder", "explore_run", "page_data", "render"]

RUNTIMES = ("js", "onnxruntime-web")

# activation module -> (JS name, its parameters)
_ACTIVATIONS = {
    nn.ReLU: lambda m: ("relu", {}),
    nn.Tanh: lambda m: ("tanh", {}),
    nn.Sigmoid: lambda m: ("sigmoid", {}),
    nn.SiLU: lambda m: ("silu", {}),
    nn.ELU: lambda m: ("elu", {"alpha": float(m.alpha)}),
    nn.LeakyReLU: lambda m: ("leaky_relu", {"slope": float(m.negative_slope)}),
    nn.GELU: lambda m: ("gelu_tanh" if m.approximate == "tanh" else "gelu", {}),
    nn.Softplus: lambda m: ("softplus", {"beta": float(m.beta), "threshold": float(m.threshold)}),
}


class _Program:
    """Operations and one flat float32 weight buffer; ``shape`` tracks the running (C, H, W)."""

    def __init__(self, latent_dim: int):
        self.ops: list[dict] = []
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.shape: tuple[int, ...] = (latent_dim,)

    def weights(self, t: torch.Tensor | None) -> int:
        """Append a tensor's values (row-major float32); returns its offset (-1 for None)."""
        if t is None:
            return -1
        a = t.detach().cpu().to(torch.float32).contiguous().numpy().reshape(-1)
        self.chunks.append(a)
        self.size += a.size
        return self.size - a.size

    def numel(self) -> int:
        return math.prod(self.shape)


def _linear(prog: _Program, m: nn.Linear, where: str) -> dict:
    if prog.numel() != m.in_features:
        raise ValueError(
            f"decoder layer {where} (Linear) expects {m.in_features} inputs; the layer before "
            f"gives {prog.numel()}"
        )
    op = {"in": m.in_features, "out": m.out_features}
    op["w"], op["b"] = prog.weights(m.weight), prog.weights(m.bias)
    return op


def _conv_transpose(prog: _Program, m: nn.ConvTranspose2d, where: str) -> None:
    if len(prog.shape) != 3 or prog.shape[0] != m.in_channels:
        raise ValueError(
            f"decoder layer {where} (ConvTranspose2d) expects {m.in_channels} channels "
            f"[C, H, W]; the layer before gives shape {prog.shape}"
        )
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise ValueError(
            f"decoder layer {where} (ConvTranspose2d): the page runs groups=1, dilation=1, "
            f"zero padding only; received groups={m.groups}, dilation={m.dilation}, "
            f"padding_mode={m.padding_mode!r}"
        )
    _, h, w = prog.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = m.kernel_size, m.stride, m.padding, m.output_padding
    hout, wout = (h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow
    op = {"op": "convT", "cin": m.in_channels, "cout": m.out_channels, "hin": h, "win": w}
    op.update(hout=hout, wout=wout, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw)
    op["w"], op["b"] = prog.weights(m.weight), prog.weights(m.bias)
    prog.ops.append(op)
    prog.shape = (m.out_channels, hout, wout)


def _emit(prog: _Program, m: nn.Module, where: str) -> None:
    """Append the operations of module ``m`` (named ``where`` in the decoder)."""
    from vaekit.models.networks import MLP, ConvDecoder, GatedDense, GatedMLP

    if isinstance(m, MLP | GatedMLP):
        _emit(prog, m.net, f"{where}.net")
        prog.shape = tuple(m.out_shape)
    elif isinstance(m, ConvDecoder):
        _emit(prog, m.head, f"{where}.head")
        _emit(prog, m.head_act, f"{where}.head_act")
        prog.shape = tuple(m.start)
        _emit(prog, m.deconvs, f"{where}.deconvs")
        i, out_shape = m._spatial_at, m.out_shape
        if i != len(out_shape) - 2:  # (H, W) not last: _to_out_shape permutes values
            raise ValueError(
                f"decoder layer {where} (ConvDecoder) has out_shape {out_shape} with axes after "
                "(H, W); the page runs decoders whose output ends in (H, W) only"
            )
        prog.shape = tuple(out_shape)
    elif isinstance(m, nn.Sequential):
        for name, child in m.named_children():
            _emit(prog, child, f"{where}.{name}")
    elif isinstance(m, nn.Linear):
        prog.ops.append({"op": "linear", **_linear(prog, m, where)})
        prog.shape = (m.out_features,)
    elif isinstance(m, GatedDense):
        h = _linear(prog, m.h, f"{where}.h")
        g = _linear(prog, m.g, f"{where}.g")
        prog.ops.append({"op": "gated", "h": h, "g": g})
        prog.shape = (m.h.out_features,)
    elif isinstance(m, nn.ConvTranspose2d):
        _conv_transpose(prog, m, where)
    elif type(m) in _ACTIVATIONS:
        fn, params = _ACTIVATIONS[type(m)](m)
        prog.ops.append({"op": "act", "fn": fn, **params})
    elif isinstance(m, nn.Identity | nn.Dropout):
        pass
    else:
        raise ValueError(
            f"decoder layer {where} ({type(m).__name__}) cannot run in the explorer page; it "
            "runs Linear, GatedDense, ConvTranspose2d and the activations "
            f"{', '.join(sorted(c.__name__ for c in _ACTIVATIONS))} (vaekit's mlp, gated and "
            "conv networks)"
        )


def _mean_head(likelihood) -> dict:
    """How the page turns decoder outputs into ``E[x|z]``: the first block, then a transform."""
    from vaekit import likelihoods as L

    if type(likelihood) is L.Bernoulli:
        kind = "sigmoid"
    elif type(likelihood) is L.ContinuousBernoulli:
        kind = "cb_mean"
    elif isinstance(likelihood, L.Gaussian | L.Laplace | L.RunningGaussian):
        kind = "identity"  # the location is the mean (the first parameter block)
    else:
        raise ValueError(
            f"likelihood {type(likelihood).__name__} cannot be shown in the explorer page; it "
            "shows Bernoulli, ContinuousBernoulli, Gaussian, RunningGaussian and Laplace means"
        )
    lo, hi = likelihood.data_range
    return {"kind": kind, "n_params": int(getattr(likelihood, "n_params", 1)), "lo": lo, "hi": hi}


def _latent_dim(model) -> int:
    """D of an unconditional :class:`vaekit.VAE` (anything else is refused, by name)."""
    from vaekit.models.vae import VAE

    if not isinstance(model, VAE) or getattr(model, "given", None) is not None:
        raise ValueError(
            f"model must be an unconditional vaekit VAE (encoder, decoder, prior, likelihood); "
            f"received {type(model).__name__}: the explorer runs one decoder p(x|z)"
        )
    return int(model.prior().event_shape[0])


def compile_decoder(model) -> dict:
    """The decoder of ``model`` as a page program: ``{"ops", "weights", "latent_dim", "head"}``.

    ``ops`` is the list of layer operations in order (``linear``: ``y = W x + b`` with
    ``W`` ``[out, in]`` at offset ``w`` of the weight buffer; ``gated``:
    ``(W_h x + b_h) * sigmoid(W_g x + b_g)``; ``convT``: a transposed convolution, weight
    ``[C_in, C_out, kh, kw]``; ``act``: an element-wise activation); ``weights`` the
    float32 buffer (``numpy``); ``head`` the likelihood mean applied to the first
    ``numel(x)`` outputs. Raises ``ValueError`` naming a layer the page cannot run.
    """
    latent_dim = _latent_dim(model)
    prog = _Program(latent_dim)
    _emit(prog, model.decoder, "decoder")
    head = _mean_head(model.likelihood)
    n_out = prog.numel()
    if n_out % head["n_params"]:
        raise ValueError(
            f"decoder gives {n_out} values, not a multiple of the likelihood's {head['n_params']} "
            "parameter blocks"
        )
    head["numel"] = n_out // head["n_params"]
    weights = np.concatenate(prog.chunks) if prog.chunks else np.zeros(0, np.float32)
    return {"ops": prog.ops, "weights": weights, "latent_dim": latent_dim, "head": head}


class _MeanImage(nn.Module):
    """``z [B, D] -> (E[x|z] - lo) / (hi - lo)`` clamped to [0, 1], flat ``[B, numel]``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        from vaekit.likelihoods import ContinuousBernoulli

        lo, hi = self.model.likelihood.data_range
        px = self.model.decode(z)
        if isinstance(self.model.likelihood, ContinuousBernoulli):
            m = _cb_mean(px.base_dist.logits)
        else:
            m = px.mean
        return ((m - lo) / (hi - lo)).clamp(0, 1).reshape(z.shape[0], -1)


def _cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """torch's continuous-Bernoulli mean, ``lam / (2 lam - 1) + 1 / (log(1 - lam) - log lam)``
    with its series ``1/2 + d/3 + 16 d^3/45`` for ``|lam - 1/2| <= 0.001``, written with ops
    the ONNX exporter can express (torch's own uses ``max`` over booleans)."""
    p = torch.sigmoid(logits)
    outside = (p <= 0.499) | (p > 0.501)
    cut = torch.where(outside, p, torch.full_like(p, 0.499))
    mus = cut / (2.0 * cut - 1.0) + 1.0 / (torch.log1p(-cut) - torch.log(cut))
    d = p - 0.5
    return torch.where(outside, mus, 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * d * d) * d)


def _onnx_decoder(model) -> tuple[bytes, int]:
    """The decoder and its likelihood mean as an ONNX model (input ``z`` ``[1, D]``, output
    ``x`` ``[1, numel]`` in [0, 1]), and numel. For the page only (opset 17)."""
    import io
    import warnings

    wrapper = _MeanImage(model).eval()
    z = torch.zeros(1, _latent_dim(model))
    buf = io.BytesIO()
    # value checks off: they are host-side control flow, not part of the graph
    with validation(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own deprecations
        numel = int(wrapper(z).shape[1])
        try:
            torch.onnx.export(wrapper, (z,), buf, input_names=["z"], output_names=["x"],
                              opset_version=17, dynamo=False)  # fmt: skip
        except Exception as err:  # the exporter's own errors name the operator it lacks
            raise ValueError(
                f"the decoder could not be exported to ONNX for onnxruntime-web ({err}); use "
                "runtime='js'"
            ) from None
    return buf.getvalue(), numel


_ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")


def _ort_runtime(ort_dir: str | os.PathLike) -> dict[str, str]:
    """onnxruntime-web's ES-module bundle (made a classic global ``ort``), its WebAssembly
    binary (base64) and version, read from its ``dist`` folder (``npm install onnxruntime-web``)."""
    import re

    root = Path(ort_dir)
    dist = root / "dist" if (root / "dist").is_dir() else root
    missing = [f for f in _ORT_FILES if not (dist / f).is_file()]
    if missing:
        raise ValueError(
            f"ort_dir must be onnxruntime-web's dist folder (npm install onnxruntime-web) "
            f"holding {', '.join(_ORT_FILES)}; received {str(root)!r}, without {', '.join(missing)}"
        )
    js = (dist / _ORT_FILES[0]).read_text(encoding="utf-8").strip()
    js = re.sub(r"//# sourceMappingURL=\S*$", "", js).strip()
    # an inline module cannot be imported, so its exports become one global object
    m = re.search(r"export\s*\{([^}]*)\}\s*;?\s*$", js)
    if m is None or "</script" in js.lower():
        raise ValueError(
            f"{dist / _ORT_FILES[0]} is not an onnxruntime-web bundle this page can inline "
            "(tested with onnxruntime-web 1.23.2)"
        )
    pairs = [p.strip().split(" as ") for p in m.group(1).split(",") if p.strip()]
    exports = ",".join(f"{q[-1]}:{q[0]}" for q in pairs)
    version = "?"
    for pkg in (dist.parent / "package.json", dist / "package.json"):
        if pkg.is_file():
            version = str(json.loads(pkg.read_text(encoding="utf-8")).get("version", "?"))
            break
    return {
        "js": js[: m.start()] + f"globalThis.ort={{{exports}}};",
        "wasm": base64.b64encode((dist / _ORT_FILES[1]).read_bytes()).decode("ascii"),
        "version": version,
    }


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).astype("<f4").tobytes()).decode("ascii")


def _round(t: torch.Tensor, digits: int = 5) -> list:
    return np.round(t.detach().cpu().double().numpy(), digits).tolist()


def page_data(
    model,
    x: torch.Tensor,
    images: torch.Tensor,
    image_shape: tuple[int, ...],
    masks: torch.Tensor | None = None,
    names: list[str] | None = None,
    n_images: int = 24,
    title: str = "vaekit explore",
    runtime: str = "js",
) -> dict:
    """Everything the page embeds, as JSON-ready values.

    ``x``: ``[N, *input_shape]`` examples for the encoder (they give the unit ranking and the
    attribute vectors); ``images``: the same examples in [0, 1], ``[N, C*H*W]``; the first
    ``n_images`` of them are the page's gallery. ``masks`` ``[N, K]`` bool and ``names``:
    the attributes (or None). Codes are posterior means (:func:`vaekit.latent.encode`).
    ``runtime``: ``"js"`` (the decoder as :func:`compile_decoder`'s program) or
    ``"onnxruntime-web"`` (the decoder and its likelihood mean exported to ONNX, for
    :func:`render` with ``ort_dir``).
    """
    from vaekit import latent

    if len(image_shape) != 3 or image_shape[0] not in (1, 3):
        raise ValueError(
            f"the explorer shows images (C, H, W) with C = 1 or 3; received data of shape "
            f"{tuple(image_shape)}"
        )
    check_choice("runtime", runtime, RUNTIMES)
    if runtime == "js":
        program = compile_decoder(model)
        decoder = {"ops": program["ops"], "head": program["head"]}
        decoder["weights"] = _b64(program["weights"])
        numel = program["head"]["numel"]
    else:
        onnx_bytes, numel = _onnx_decoder(model)
        decoder = {"onnx": base64.b64encode(onnx_bytes).decode("ascii")}
    if numel != math.prod(image_shape):
        raise ValueError(
            f"decoder mean has {numel} values; the images have {math.prod(image_shape)} "
            f"({tuple(image_shape)})"
        )
    codes = latent.encode(model, x)
    ranking = latent.rank_units(model, x)
    units = ranking.active or ranking.order[: min(5, len(ranking.order))]
    vectors = {} if masks is None else latent.attribute_vectors(codes, masks, names)
    n = min(int(n_images), x.shape[0])
    if n < 2:
        raise ValueError(f"n_images must be >= 2 (images A and B); received {n_images}")
    pixels = (images[:n].reshape(n, -1).clamp(0, 1) * 255).round().to(torch.uint8)
    return {
        "title": title,
        "latent_dim": _latent_dim(model),
        "image_shape": list(image_shape),
        "runtime": runtime,
        **decoder,
        "units": [
            {"unit": d, "kl": None if math.isnan(ranking.kl[d]) else round(float(ranking.kl[d]), 4)}
            for d in units
        ],
        "any_active": bool(ranking.active),
        "codes": _round(codes[:n]),
        "gallery": base64.b64encode(pixels.numpy().tobytes()).decode("ascii"),
        "attributes": {k: _round(v) for k, v in vectors.items()},
    }


def explore_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    n_images: int = 24,
    max_examples: int = 2000,
    labels_from: str | os.PathLike | None = None,
    runtime: str = "js",
    ort_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``RUN_DIR/explore.html`` (or ``out``) for a run's best checkpoint; returns its path.

    The units are ranked and the attribute vectors computed on the first ``max_examples``
    test images (the fixed evaluation view); their first ``n_images`` form the gallery.
    Attributes come from the data set's labels (:func:`vaekit.latent.data_attributes`), or
    from ``labels_from``, a folder of labelled sub-folders
    (:func:`vaekit.latent.folder_attributes`). ``report.html``, when present, is rewritten
    to link the page. ``runtime="onnxruntime-web"`` runs an ONNX export of the decoder with
    onnxruntime-web inlined from ``ort_dir`` instead of the page's own program (see
    :func:`render`).
    """
    from vaekit import latent
    from vaekit._files import atomic_write_text
    from vaekit.evaluate import _to_unit
    from vaekit.report import write_report
    from vaekit.training.run import load_run

    if int(n_images) < 2:
        raise ValueError(f"n_images must be >= 2 (images A and B); received {n_images}")
    if int(max_examples) < int(n_images):
        raise ValueError(f"max_examples must be >= n_images ({n_images}); received {max_examples}")
    check_choice("runtime", runtime, RUNTIMES)
    if runtime == "js" and ort_dir is not None:
        raise ValueError(
            f"ort_dir applies to runtime 'onnxruntime-web'; received runtime {runtime!r}"
        )
    if runtime != "js":
        if ort_dir is None:
            raise ValueError(
                "ort_dir must name onnxruntime-web's dist folder for runtime 'onnxruntime-web'; "
                "received None"
            )
        _ort_runtime(ort_dir)  # a missing or unusable runtime is refused before the work
    run_dir = Path(run_dir)
    model, cfg, splits = load_run(run_dir, "best")
    if runtime == "js":
        compile_decoder(model)  # refuse an unsupported model before encoding anything
    masks = names = None
    if labels_from is not None:
        flat, masks, names = latent.folder_attributes(labels_from)
        if flat.shape[1] != math.prod(splits.event_shape):
            raise ValueError(
                f"labels_from must hold images of the run's size {tuple(splits.image_shape)}; "
                f"received {flat.shape[1]} pixels per image in {str(labels_from)!r}"
            )
        flat, masks = flat[:max_examples], masks[:max_examples]
        x = latent._prepare(model, cfg, splits, flat)
    else:
        split = "test" if splits.test is not None else "valid" if splits.valid else "train"
        try:
            x, masks, names = latent.data_attributes(splits, model, cfg, split, max_examples)
        except ValueError:  # no labels: sliders and interpolation only
            view = getattr(splits, split).eval_view()
            x = latent._prepare(model, cfg, splits, view.x[:max_examples])
    images = _to_unit(model, x).reshape(x.shape[0], -1)
    title = f"vaekit explore: {run_dir.resolve().name}"
    data = page_data(
        model, x, images, splits.image_shape, masks, names, n_images, title, runtime=runtime
    )
    path = atomic_write_text(
        Path(out) if out is not None else run_dir / "explore.html", render(data, ort_dir)
    )
    if out is None and (run_dir / "report.html").exists():
        write_report(run_dir)
    return path


def render(data: dict, ort_dir: str | os.PathLike | None = None) -> str:
    """The page's HTML for :func:`page_data`'s dict (the data as inline JSON).

    A page of runtime ``"onnxruntime-web"`` inlines onnxruntime-web from ``ort_dir`` (its
    ``dist`` folder): the JavaScript bundle and the WebAssembly binary, so it stays
    self-contained (onnxruntime-web 1.23.2 adds about 16 MB).
    """
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(data["title"])
    if data.get("runtime", "js") == "js":
        extra, script_src, note = "", "'unsafe-inline'", "vaekit's in-page program"
    else:
        if ort_dir is None:
            raise ValueError(
                "ort_dir must name onnxruntime-web's dist folder for runtime "
                "'onnxruntime-web'; received None"
            )
        ort = _ort_runtime(ort_dir)
        extra = _ORT_SCRIPTS.format(wasm=ort["wasm"], ort=ort["js"])
        script_src = "'unsafe-inline' 'wasm-unsafe-eval'"
        note = f"onnxruntime-web {html.escape(ort['version'])} (ONNX, WebAssembly)"
    return _PAGE.format(title=title, data=blob, script=_SCRIPT, css=_CSS, extra=extra,
                        script_src=script_src, note=note)  # fmt: skip


_ORT_SCRIPTS = """<script type="text/plain" id="vaekit-ort-wasm">{wasm}</script>
<script type="module">{ort}</script>
<script type="module">
const raw = (id) => {{ const b = atob(document.getElementById(id).textContent), u = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return u; }};
try {{
  const ort = globalThis.ort;
  ort.env.wasm.wasmBinary = raw("vaekit-ort-wasm").buffer;
  ort.env.wasm.numThreads = 1; ort.env.wasm.proxy = false;  // no workers: nothing to fetch
  const data = JSON.parse(document.getElementById("vaekit-data").textContent);
  const model = Uint8Array.from(atob(data.onnx), (c) => c.charCodeAt(0));
  const session = await ort.InferenceSession.create(model);
  window.vaekitDecoder.resolve(async (z) => (await session.run(
    {{ z: new ort.Tensor("float32", Float32Array.from(z), [1, z.length]) }})).x.data);
}} catch (err) {{ window.vaekitDecoder.reject(err); }}
</script>
"""


_CSS = """
body{font:14px system-ui,sans-serif;margin:16px;color:#222;max-width:1100px}
h1{font-size:20px} h2{font-size:15px;margin:14px 0 6px}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
canvas.big{width:280px;height:280px;image-rendering:pixelated;border:1px solid #999}
#gallery canvas{width:42px;height:42px;image-rendering:pixelated;margin:2px;cursor:pointer;
border:2px solid transparent}
#gallery canvas.a{border-color:#d33} #gallery canvas.b{border-color:#33d}
label.s{display:flex;gap:8px;align-items:center;margin:2px 0;font-variant-numeric:tabular-nums}
label.s span.n{width:170px} label.s span.v{width:48px;text-align:right}
input[type=range]{width:220px} .note{color:#666;font-size:12px}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'">
<title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
<p class="note">The decoder runs in this page (no network; {note}). Code shown:
z = interp(z<sub>A</sub>, z<sub>B</sub>, t) + &Sigma; s<sub>k</sub> v<sub>k</sub> + &delta;;
the picture is E[x | z].</p>
<div class="row">
 <div><canvas id="out" class="big"></canvas><div id="zinfo" class="note"></div></div>
 <div>
  <h2>Images A and B <span class="note">(click: A; shift-click: B)</span></h2>
  <div id="gallery"></div>
  <label class="s"><span class="n">t (A &rarr; B)</span>
   <input id="t" type="range" min="0" max="1" step="0.01" value="0"><span class="v" id="tv">0</span></label>
  <label class="s"><span class="n">interpolation</span>
   <select id="mode"><option value="lerp">linear</option><option value="slerp">spherical</option></select></label>
  <h2>Attribute vectors <span class="note">(strength s<sub>k</sub>)</span></h2><div id="attrs"></div>
 </div>
 <div><h2>Latent units by KL <span class="note">(offset &delta;)</span></h2>
  <button id="reset">reset</button><div id="units"></div></div>
</div>
<pre id="vaekit-test-output" hidden></pre>
<script type="application/json" id="vaekit-data">{data}</script>
<script>{script}</script>
{extra}</body></html>
"""

_SCRIPT = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("vaekit-data").textContent);
function bytes(s) { const b = atob(s), u = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) u[i] = b.charCodeAt(i); return u; }
const W = DATA.weights === undefined ? null : new Float32Array(bytes(DATA.weights).buffer);
const D = DATA.latent_dim, [C, H, Wd] = DATA.image_shape, NPIX = H * Wd;

function erf(x) {  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7
  const s = Math.sign(x), a = Math.abs(x), t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
    + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}
const sigmoid = (v) => 1 / (1 + Math.exp(-v));
const ACT = {
  relu: () => (v) => (v > 0 ? v : 0), tanh: () => Math.tanh, sigmoid: () => sigmoid,
  silu: () => (v) => v * sigmoid(v),
  elu: (op) => (v) => (v > 0 ? v : op.alpha * (Math.exp(v) - 1)),
  leaky_relu: (op) => (v) => (v > 0 ? v : op.slope * v),
  gelu: () => (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  gelu_tanh: () => (v) => 0.5 * v * (1 + Math.tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))),
  softplus: (op) => (v) => (v * op.beta > op.threshold ? v : Math.log1p(Math.exp(op.beta * v)) / op.beta),
};
function linear(x, op) {
  const y = new Float32Array(op.out);
  for (let o = 0; o < op.out; o++) {
    let s = op.b >= 0 ? W[op.b + o] : 0; const r = op.w + o * op.in;
    for (let i = 0; i < op.in; i++) s += W[r + i] * x[i];
    y[o] = s;
  }
  return y;
}
function convT(x, op) {  // weight [cin, cout, kh, kw]; out[oy = iy*sh - ph + ky, ox = ix*sw - pw + kx]
  const y = new Float32Array(op.cout * op.hout * op.wout), hw = op.hout * op.wout;
  if (op.b >= 0) for (let c = 0; c < op.cout; c++) y.fill(W[op.b + c], c * hw, (c + 1) * hw);
  for (let ci = 0; ci < op.cin; ci++) for (let iy = 0; iy < op.hin; iy++) for (let ix = 0; ix < op.win; ix++) {
    const v = x[(ci * op.hin + iy) * op.win + ix]; if (v === 0) continue;
    for (let co = 0; co < op.cout; co++) {
      const wb = op.w + (ci * op.cout + co) * op.kh * op.kw, yb = co * hw;
      for (let ky = 0; ky < op.kh; ky++) {
        const oy = iy * op.sh - op.ph + ky; if (oy < 0 || oy >= op.hout) continue;
        for (let kx = 0; kx < op.kw; kx++) {
          const ox = ix * op.sw - op.pw + kx; if (ox < 0 || ox >= op.wout) continue;
          y[yb + oy * op.wout + ox] += v * W[wb + ky * op.kw + kx];
        }
      }
    }
  }
  return y;
}
function decode(z) {  // E[x|z] mapped to [0, 1], NPIX * C values (channel-major)
  let x = Float32Array.from(z);
  for (const op of DATA.ops) {
    if (op.op === "linear") x = linear(x, op);
    else if (op.op === "gated") { const h = linear(x, op.h), g = linear(x, op.g);
      for (let i = 0; i < h.length; i++) h[i] *= sigmoid(g[i]); x = h; }
    else if (op.op === "convT") x = convT(x, op);
    else if (op.op === "act") { const f = ACT[op.fn](op); for (let i = 0; i < x.length; i++) x[i] = f(x[i]); }
    else throw new Error("unknown op " + op.op);
  }
  const hd = DATA.head, m = new Float32Array(hd.numel);
  for (let i = 0; i < hd.numel; i++) {
    const l = x[i]; let v;
    if (hd.kind === "sigmoid") v = sigmoid(l);
    else if (hd.kind === "cb_mean") {  // continuous Bernoulli mean, as torch computes it
      const p = sigmoid(l);
      if (p <= 0.499 || p > 0.501) v = p / (2 * p - 1) + 1 / (Math.log1p(-p) - Math.log(p));
      else { const d = p - 0.5; v = 0.5 + (1 / 3 + 16 / 45 * d * d) * d; }
    } else v = l;
    m[i] = Math.min(1, Math.max(0, (v - hd.lo) / (hd.hi - hd.lo)));
  }
  return m;
}
function paint(canvas, px, getter) {  // px: channel-major values in [0, 1] (or 0-255 via getter)
  canvas.width = Wd; canvas.height = H;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(Wd, H);
  for (let i = 0; i < NPIX; i++) for (let k = 0; k < 3; k++)
    img.data[4 * i + k] = getter(px, (C === 3 ? k : 0) * NPIX + i);
  for (let i = 0; i < NPIX; i++) img.data[4 * i + 3] = 255;
  ctx.putImageData(img, 0, 0);
}
const unitVal = (a, i) => a[i] * 255;
const GALLERY = bytes(DATA.gallery), N = DATA.codes.length;
const state = { a: 0, b: Math.min(1, N - 1), t: 0, mode: "lerp", attrs: {}, delta: new Float32Array(D) };
const $ = (id) => document.getElementById(id);
function slerp(z0, z1, t) {
  let dot = 0, n0 = 0, n1 = 0;
  for (let i = 0; i < D; i++) { dot += z0[i] * z1[i]; n0 += z0[i] * z0[i]; n1 += z1[i] * z1[i]; }
  n0 = Math.sqrt(n0); n1 = Math.sqrt(n1);
  const om = Math.acos(Math.min(1, Math.max(-1, dot / Math.max(n0 * n1, 1e-30)))), s = Math.sin(om);
  if (s < 1e-6 || n0 === 0 || n1 === 0) return z0.map((v, i) => (1 - t) * v + t * z1[i]);
  const w0 = Math.sin((1 - t) * om) / s, w1 = Math.sin(t * om) / s;
  return z0.map((v, i) => w0 * v + w1 * z1[i]);
}
function currentCode() {
  const z0 = DATA.codes[state.a], z1 = DATA.codes[state.b];
  const z = state.mode === "slerp" ? slerp(z0, z1, state.t) : z0.map((v, i) => (1 - state.t) * v + state.t * z1[i]);
  for (const [name, s] of Object.entries(state.attrs)) { const v = DATA.attributes[name];
    for (let i = 0; i < D; i++) z[i] += s * v[i]; }
  for (let i = 0; i < D; i++) z[i] += state.delta[i];
  return z;
}
// The decoder: this page's program, or (runtime onnxruntime-web) the ONNX session that the
// module script below hands over; either maps a code to E[x|z] in [0, 1].
const decoder = DATA.ops !== undefined ? Promise.resolve(async (z) => decode(z))
  : new Promise((resolve, reject) => { window.vaekitDecoder = { resolve, reject }; });
let lastCode = null, latest = 0;
async function update() {
  const z = currentCode(), id = ++latest;
  const m = await (await decoder)(z);
  if (id !== latest) return;  // a newer update is on its way: draw only the last one
  lastCode = z;
  paint($("out"), m, unitVal);
  $("zinfo").textContent = "A = #" + state.a + ", B = #" + state.b + ", t = " + state.t;
  for (const [i, c] of Array.from($("gallery").children).entries()) {
    c.classList.toggle("a", i === state.a); c.classList.toggle("b", i === state.b); }
}
function slider(parent, label, min, max, step, onInput, attrs) {
  const l = document.createElement("label"); l.className = "s";
  const n = document.createElement("span"); n.className = "n"; n.textContent = label;
  const r = document.createElement("input"); Object.assign(r, { type: "range", min, max, step, value: 0 });
  for (const [k, v] of Object.entries(attrs)) r.dataset[k] = v;
  const v = document.createElement("span"); v.className = "v"; v.textContent = "0";
  r.addEventListener("input", () => { v.textContent = r.value; onInput(parseFloat(r.value)); update(); });
  l.append(n, r, v); parent.append(l); return r;
}
for (let j = 0; j < N; j++) {
  const c = document.createElement("canvas"); c.title = "#" + j;
  paint(c, GALLERY, (a, i) => a[j * NPIX * C + i]);
  c.addEventListener("click", (e) => { if (e.shiftKey) state.b = j; else state.a = j; update(); });
  $("gallery").append(c);
}
$("t").addEventListener("input", () => { state.t = parseFloat($("t").value); $("tv").textContent = $("t").value; update(); });
$("mode").addEventListener("change", () => { state.mode = $("mode").value; update(); });
const names = Object.keys(DATA.attributes);
if (!names.length) $("attrs").textContent = "(no labels in this data set)";
for (const name of names) slider($("attrs"), name, -3, 3, 0.05, (s) => { state.attrs[name] = s; }, { attribute: name });
if (!DATA.any_active) $("units").append("(no active unit: the largest KL shown)");
for (const u of DATA.units)
  slider($("units"), "z" + u.unit + (u.kl === null ? "" : " (KL " + u.kl.toFixed(2) + " nats)"),
    -3, 3, 0.05, (s) => { state.delta[u.unit] = s; }, { unit: u.unit });
$("reset").addEventListener("click", () => {
  state.delta.fill(0); state.attrs = {};
  for (const r of document.querySelectorAll("#units input, #attrs input")) { r.value = 0; r.nextSibling.textContent = "0"; }
  update();
});
const ready = update().catch((err) => { $("zinfo").textContent = "decoder failed: " + err; throw err; });
// Test hook: #test={"a":i,"b":j,"t":..,"mode":..,"units":{"d":v},"attrs":{"name":s}} moves the
// controls through their own input events and writes the code and the canvas pixels below.
if (location.hash.startsWith("#test=")) (async () => {
  const T = JSON.parse(decodeURIComponent(location.hash.slice(6)));
  await ready;
  const before = Array.from($("out").getContext("2d").getImageData(0, 0, Wd, H).data);
  const gal = $("gallery").children;
  if (T.a !== undefined) gal[T.a].dispatchEvent(new MouseEvent("click"));
  if (T.b !== undefined) gal[T.b].dispatchEvent(new MouseEvent("click", { shiftKey: true }));
  if (T.mode !== undefined) { $("mode").value = T.mode; $("mode").dispatchEvent(new Event("change")); }
  const move = (r, v) => { if (!r) throw new Error("no such control for value " + v);
    r.value = v; r.dispatchEvent(new Event("input")); };
  if (T.t !== undefined) move($("t"), T.t);
  for (const [d, v] of Object.entries(T.units || {})) move(document.querySelector('input[data-unit="' + d + '"]'), v);
  for (const [n, v] of Object.entries(T.attrs || {}))
    move(Array.from(document.querySelectorAll("input[data-attribute]")).find((r) => r.dataset.attribute === n), v);
  await update();
  const after = Array.from($("out").getContext("2d").getImageData(0, 0, Wd, H).data);
  const t0 = performance.now(); await (await decoder)(lastCode); const ms = performance.now() - t0;
  $("vaekit-test-output").textContent = JSON.stringify({ z: Array.from(lastCode), before, after, ms });
})().catch((err) => { $("vaekit-test-output").textContent = JSON.stringify({ error: String(err) }); });
"""
