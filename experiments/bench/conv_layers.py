"""Per-convolution benchmark of a ResNet-18 CIFAR train step: XLA against PyTorch, one run.

Where does the classifier benchmark's gap to PyTorch come from? For every distinct convolution
of ResNet-18 with the CIFAR stem at batch ``--batch-size`` (NHWC for jax, channels_last for
torch), three passes are timed on the same random inputs:

* ``fwd``: the convolution;
* ``dx``: the input gradient (the VJP with respect to the input only);
* ``dw``: the weight gradient (the VJP with respect to the kernel only); and, as a lever,
  ``dw_im2col``: the same gradient as one matrix product of the input's patches
  (``lax.conv_general_dilated_patches``) with the output cotangent.

Each library runs in its own process, one after the other (alternating calls in one process
lets one library's spinning thread pool slow the other's), and each figure is the median of
``--repeats`` calls (jax calls end in ``block_until_ready``). Multiplying by how often each
convolution occurs in the network gives the step's convolution time in each library, hence a
bound: a jax step is no faster than its convolutions, so ``B / jax_conv_s`` images/s bounds
the jaxcv step with these kernels, to compare with PyTorch's whole step. Read the torch column
with care: isolated calls pay autograd and layout set-up per call, so their sum exceeds
PyTorch's whole train step (measured: 7.8 s of convolutions vs a 5.5 s step, AMD EPYC, 2
cores); the jax column is the in-network cost (its sum was 74-87% of the jaxcv fp32 step).
The kernel XLA chose for each pass is printed from the compiled HLO (a YNNPACK fusion, or
XLA's own convolution with its window and dimension labels). jax reads ``XLA_FLAGS`` once:
importing jaxcv first appends its CPU convolution flag (see ``jaxcv._xla_flags``);
``JAXCV_NO_XLA_FLAGS=1`` measures XLA's default (the flag is read in the jax worker
process). The last line printed is one JSON object. Run::

    .venv/bin/python experiments/bench/conv_layers.py                # about 2 minutes idle
    JAXCV_NO_XLA_FLAGS=1 .venv/bin/python experiments/bench/conv_layers.py
"""

import argparse
import json
import os
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from worker import run_worker

# (name, input size, in channels, out channels, kernel, stride, occurrences in ResNet-18)
LAYERS = (
    ("stem 3x3 3->64", 32, 3, 64, 3, 1, 1),
    ("layer1 3x3 64->64", 32, 64, 64, 3, 1, 4),
    ("layer2 3x3 64->128 /2", 32, 64, 128, 3, 2, 1),
    ("layer2 1x1 64->128 /2", 32, 64, 128, 1, 2, 1),
    ("layer2 3x3 128->128", 16, 128, 128, 3, 1, 3),
    ("layer3 3x3 128->256 /2", 16, 128, 256, 3, 2, 1),
    ("layer3 1x1 128->256 /2", 16, 128, 256, 1, 2, 1),
    ("layer3 3x3 256->256", 8, 256, 256, 3, 1, 3),
    ("layer4 3x3 256->512 /2", 8, 256, 512, 3, 2, 1),
    ("layer4 1x1 256->512 /2", 8, 256, 512, 1, 2, 1),
    ("layer4 3x3 512->512", 4, 512, 512, 3, 1, 3),
)
PASSES = ("fwd", "dx", "dw")
DIMS = ("NHWC", "HWIO", "NHWC")


def _padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    p = kernel // 2
    return ((p, p), (p, p))  # torch's padding=k//2, also for the stride-2 convolutions


def _conv(x, w, stride):
    k = w.shape[0]
    return lax.conv_general_dilated(x, w, (stride, stride), _padding(k), dimension_numbers=DIMS)


def dw_im2col(x, g, kernel: int, stride: int):
    """The kernel gradient ``(k, k, Cin, Cout)`` as ``patches(x)^T @ g``: one matrix product
    over the ``B * H' * W'`` output positions."""
    cin = x.shape[-1]
    patches = lax.conv_general_dilated_patches(
        x, (kernel, kernel), (stride, stride), _padding(kernel), dimension_numbers=DIMS
    )  # (B, H', W', Cin * k * k), channel-major: index c * k * k + (i * k + j)
    dw = jnp.einsum("bhwp,bhwo->po", patches, g)
    return dw.reshape(cin, kernel, kernel, -1).transpose(1, 2, 0, 3)


def _jax_fns(stride: int, kernel: int):
    def fwd(x, w):
        return _conv(x, w, stride)

    def dx(x, w, g):
        return jax.vjp(lambda x_: _conv(x_, w, stride), x)[1](g)[0]

    def dw(x, w, g):
        return jax.vjp(lambda w_: _conv(x, w_, stride), w)[1](g)[0]

    def dw2(x, w, g):
        del w
        return dw_im2col(x, g, kernel, stride)

    return {"fwd": fwd, "dx": dx, "dw": dw, "dw_im2col": dw2}


def _kernel_of(compiled_text: str) -> str:
    """What runs the convolution: a YNN/XNN fusion, XLA's convolution (window, labels), or a
    dot (the im2col product)."""
    if re.search(r"__(ynn|xnn)_fusion|ynn_fusion|xnn_fusion", compiled_text):
        return "ynn/xnn fusion"
    conv = re.search(r"convolution\([^)]*\).*?window=\{([^}]*)\}.*?dim_labels=(\S+?)[,\s]",
                     compiled_text)  # fmt: skip
    if conv:
        return f"xla conv window {{{conv.group(1)}}} {conv.group(2)}"
    return "dot" if " dot(" in compiled_text else "other"


def _torch_fns(x, w, g, stride: int, kernel: int):
    import torch

    pad = kernel // 2
    last = torch.channels_last
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(memory_format=last)
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).to(memory_format=last)
    gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy()).to(memory_format=last)
    conv = torch.nn.functional.conv2d

    def fwd():
        with torch.no_grad():
            return conv(xt, wt, stride=stride, padding=pad)

    def dx():
        xr = xt.detach().requires_grad_(True)
        return torch.autograd.grad(conv(xr, wt, stride=stride, padding=pad), xr, gt)[0]

    def dw():
        wr = wt.detach().requires_grad_(True)
        return torch.autograd.grad(conv(xt, wr, stride=stride, padding=pad), wr, gt)[0]

    return {"fwd": fwd, "dx": dx, "dw": dw}


def _median_ms(fns: dict, repeats: int) -> dict:
    for f in fns.values():  # warm-up
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def _inputs(size, cin, cout, kernel, stride, batch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, cin)).astype(np.float32)
    w = (rng.normal(size=(kernel, kernel, cin, cout)) / np.sqrt(cin * kernel**2)).astype(np.float32)
    g = rng.normal(size=(batch, size // stride, size // stride, cout)).astype(np.float32)
    return x, w, g


def jax_layer(size, cin, cout, kernel, stride, batch, repeats) -> dict:
    """jax ms per pass (and ``dw_im2col``), XLA's kernel per pass, and the relative difference
    between the two weight gradients."""
    import jax

    x, w, g = (jax.numpy.asarray(a) for a in _inputs(size, cin, cout, kernel, stride, batch))
    args = {"fwd": (x, w), "dx": (x, w, g), "dw": (x, w, g), "dw_im2col": (x, w, g)}
    compiled = {
        name: jax.jit(fn).lower(*args[name]).compile()
        for name, fn in _jax_fns(stride, kernel).items()
    }
    fns = {k: (lambda c=c, a=args[k]: c(*a).block_until_ready()) for k, c in compiled.items()}
    dw, dw2 = (np.asarray(compiled[k](*args[k])) for k in ("dw", "dw_im2col"))
    return {
        "ms": _median_ms(fns, repeats),
        "kernels": {k: _kernel_of(c.as_text()) for k, c in compiled.items()},
        "im2col_rel_err": float(np.abs(dw - dw2).max() / np.abs(dw).max()),
    }


def torch_layer(size, cin, cout, kernel, stride, batch, repeats) -> dict:
    """torch (channels_last) ms per pass."""
    fns = _torch_fns(*_inputs(size, cin, cout, kernel, stride, batch), stride, kernel)
    return {"ms": _median_ms(fns, repeats)}


def worker(lib: str, batch: int, repeats: int) -> dict:
    """Every layer of :data:`LAYERS` in library ``lib`` (this process)."""
    if lib == "torch":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        result = {"torch_version": torch.__version__, "threads": torch.get_num_threads()}
        measure = torch_layer
    else:
        import jaxcv  # noqa: F401  (the CPU convolution flag, before jax initialises)

        result = {"xla_flags": os.environ.get("XLA_FLAGS", "")}
        measure = jax_layer
    result["layers"] = [measure(*layer[1:6], batch, repeats) for layer in LAYERS]
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch_size, args.repeats)), flush=True)
        return {}

    load = os.getloadavg()[0]
    cmd = [sys.executable, os.path.abspath(__file__), "--batch-size", str(args.batch_size)]
    cmd += ["--repeats", str(args.repeats), "--worker"]
    jax_res = run_worker([*cmd, "jax"], "jax convolutions")
    torch_res = run_worker([*cmd, "torch"], "torch convolutions")
    totals = {f"{lib}_{p}": 0.0 for lib in ("jax", "torch") for p in (*PASSES, "dw_im2col")}
    rows = []
    print(f"ResNet-18 CIFAR convolutions, batch {args.batch_size}, median of {args.repeats}; "
          f"{os.cpu_count()} CPUs, load {load:.1f}; XLA_FLAGS={jax_res['xla_flags']!r}; "
          f"torch {torch_res['torch_version']}, {torch_res['threads']} threads")  # fmt: skip
    print(f"{'convolution':<24} {'n':>2} " + " ".join(f"{p + ' jax/torch ms':>18}" for p in
          PASSES) + f" {'dw im2col':>9}  XLA kernel (dw)")  # fmt: skip
    for layer, jr, tr in zip(LAYERS, jax_res["layers"], torch_res["layers"], strict=True):
        name, count = layer[0], layer[-1]
        ms = {f"jax_{k}": v for k, v in jr["ms"].items()}
        ms.update({f"torch_{k}": v for k, v in tr["ms"].items()})
        for key, value in ms.items():
            totals[key] += count * value
        cells = " ".join(f"{ms['jax_' + p]:8.2f}/{ms['torch_' + p]:<8.2f} " for p in PASSES)
        print(f"{name:<24} {count:2d} {cells} {ms['jax_dw_im2col']:9.2f}  {jr['kernels']['dw']}")
        rows.append({"layer": name, "count": count, **{k: round(v, 3) for k, v in ms.items()},
                     "kernels": jr["kernels"], "im2col_rel_err": jr["im2col_rel_err"]})  # fmt: skip
    jax_conv = sum(totals[f"jax_{p}"] for p in PASSES)
    torch_conv = sum(totals[f"torch_{p}"] for p in PASSES)
    for p in PASSES:
        print(f"network {p:<4}: jax {totals['jax_' + p]:8.1f} ms, torch {totals['torch_' + p]:8.1f}"
              f" ms, jax/torch time {totals['jax_' + p] / totals['torch_' + p]:.2f}")  # fmt: skip
    print(f"weight gradient as im2col + one matrix product: {totals['jax_dw_im2col']:.1f} ms")
    print(f"all convolutions: jax {jax_conv:.1f} ms, torch {torch_conv:.1f} ms per step; jaxcv "
          f"step bound {1e3 * args.batch_size / jax_conv:.1f} images/s")  # fmt: skip
    summary = {
        "batch_size": args.batch_size,
        "load_average": round(load, 2),
        "xla_flags": jax_res["xla_flags"],
        "totals_ms": {k: round(v, 2) for k, v in totals.items()},
        "jax_conv_ms": round(jax_conv, 2),
        "torch_conv_ms": round(torch_conv, 2),
        "jax_conv_bound_images_per_s": round(1e3 * args.batch_size / jax_conv, 1),
        "conv_time_ratio_jax_over_torch": round(jax_conv / torch_conv, 3),
        "rows": rows,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
