"""The dense matmuls of a BERT encoder alone: TensorFlow's kernels vs ONNX Runtime's, same shapes, same process.

Issue #13 asks the export's batch-1 latency to be within 1.2x of ONNX
Runtime. ``bench/serving_profile.py`` found 80% of a compact batch-1 call in
the 24 dense matmuls (+ bias, fused by Grappler) of MiniLM-L6. This script
times exactly those matmuls -- for every layer: QKV ``[H, 3H]``, attention
output ``[H, H]``, intermediate ``[H, 4H]``, output ``[4H, H]`` -- as one
graph per engine, on ``rows`` activations (= batch x tokens: 16 is one short
request, 512 a batch of 32), nothing else in the graph:

* ``TF float32``: a ``tf.function`` of MatMul + BiasAdd, weights in
  variables (as in the export), run the way the export runs (oneDNN as this
  TensorFlow build configures it);
* ``TF float32 const``: the same with the weights as constants in the graph
  (oneDNN can keep constant weights in its own layout);
* ``TF float32 oneDNN off`` (``--onednn-off``): ``TF float32`` timed again in a
  child process started with ``TF_ENABLE_ONEDNN_OPTS=0`` (Eigen's kernels);
* ``TF bfloat16``: the same with bfloat16 weights and activations (what
  ``export --optimize compact+bf16`` does);
* ``ORT float32``: an ONNX graph of MatMul + Add with the same weights, in
  ONNX Runtime's CPU provider (its MLAS kernels).

If TensorFlow's matmuls alone take longer than ONNX Runtime's whole model
call, no change to the graph around them can reach the 1.2x target.

    python bench/matmul_kernels.py [--threads 2] [--rows 1 16 32 128 512] [--docs docs/benchmarks.md]

Needs onnx + onnxruntime for the ORT column (see docs/benchmarks.md); without
them only the TensorFlow columns are timed.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401  (environment for TF before it loads)

import numpy as np  # noqa: E402

import benchlib  # noqa: E402

DOCS_START, DOCS_END = "<!-- matmul-kernels:start -->", "<!-- matmul-kernels:end -->"
TF32, TFCONST, TFBF16, ORT32 = "TF float32", "TF float32 const", "TF bfloat16", "ORT float32"
TF32_NO_ONEDNN = "TF float32 oneDNN off"


def layer_shapes(hidden: int, intermediate: int, layers: int) -> List[Tuple[int, int]]:
    """The [in, out] kernel shapes of an encoder's dense layers, in call order."""
    return [(hidden, 3 * hidden), (hidden, hidden), (hidden, intermediate), (intermediate, hidden)] * layers


def tf_matmuls(kernels: List[np.ndarray], dtype_name: str, constants: bool = False) -> Callable[[np.ndarray], object]:
    """One tf.function: every kernel applied to ``x`` (tiled to its input width), outputs concatenated.
    ``constants``: the weights are Const nodes of the traced graph instead of variables."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype_name)
    if not constants:
        variables = [tf.Variable(tf.cast(k, dtype), trainable=False) for k in kernels]
        bias_variables = [tf.Variable(tf.zeros([k.shape[1]], dtype), trainable=False) for k in kernels]
    hidden = kernels[0].shape[0]

    @tf.function(input_signature=[tf.TensorSpec([None, hidden], tf.float32)])
    def run(x):
        if constants:   # created while tracing: Const nodes, not captured inputs
            weights = [tf.constant(k.astype(dtype.as_numpy_dtype)) for k in kernels]
            biases = [tf.zeros([k.shape[1]], dtype) for k in kernels]
        else:
            weights, biases = variables, bias_variables
        x = tf.cast(x, dtype)
        wide = {}
        outputs = []
        for w, b in zip(weights, biases):
            width = int(w.shape[0])
            if width not in wide:
                wide[width] = x if width == hidden else tf.tile(x, [1, width // hidden])
            outputs.append(tf.nn.bias_add(tf.matmul(wide[width], w), b))
        return tf.concat(outputs, axis=1)

    return lambda x: run(tf.constant(x)).numpy()


def ort_matmuls(kernels: List[np.ndarray], threads: int):
    """The same graph in ONNX Runtime (None when onnx/onnxruntime are not installed)."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    hidden = kernels[0].shape[0]
    nodes, inits, outputs, wide = [], [], [], {}
    for i, kernel in enumerate(kernels):
        width = kernel.shape[0]
        if width not in wide:
            wide[width] = "x" if width == hidden else f"x_{width}"
            if width != hidden:
                nodes.append(helper.make_node("Concat", ["x"] * (width // hidden), [wide[width]], axis=1))
        inits += [numpy_helper.from_array(kernel, f"w{i}"),
                  numpy_helper.from_array(np.zeros(kernel.shape[1], np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [wide[width], f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"])]
        outputs.append(f"y{i}")
    nodes.append(helper.make_node("Concat", outputs, ["out"], axis=1))
    graph = helper.make_graph(nodes, "matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, hidden])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def measure(args) -> Dict[str, Dict[str, dict]]:
    rng = np.random.default_rng(0)
    kernels = [(rng.standard_normal(shape) * 0.02).astype(np.float32)
               for shape in layer_shapes(args.hidden, args.intermediate, args.layers)]
    engines = {TF32: tf_matmuls(kernels, "float32"), TFCONST: tf_matmuls(kernels, "float32", constants=True),
               TFBF16: tf_matmuls(kernels, "bfloat16")}
    ort = None if args.only_tf32 else ort_matmuls(kernels, args.threads)
    if args.only_tf32:
        engines = {TF32: engines[TF32]}
    elif ort is not None:
        engines[ORT32] = ort
    else:
        print("onnxruntime is not installed: TensorFlow columns only", file=sys.stderr)
    results = {}
    for rows in args.rows:
        x = rng.standard_normal((rows, args.hidden)).astype(np.float32)
        reference = engines[TF32](x)
        for name, call in engines.items():   # same arithmetic, else the timings compare different work
            error = float(np.abs(call(x) - reference).max())
            limit = 0.05 if name == TFBF16 else 1e-3
            if error > limit:
                raise SystemExit(f"{name} differs from {TF32} by {error:.3g} at {rows} rows")
        calls = {name: (lambda i, call=call: call(x)) for name, call in engines.items()}
        times = benchlib.interleaved(calls, args.calls, block=5, warmup=10)
        results[str(rows)] = {name: benchlib.summarize(t["wall"]) for name, t in times.items()}
        print(f"  {rows:4d} rows: " + ", ".join(f"{n} {s['p50_ms']:.2f} ms" for n, s in results[str(rows)].items()),
              flush=True)
    return results


def onednn_off(args) -> Dict[str, dict]:
    """``TF float32`` per row count from a child process with oneDNN switched off."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "child.json")
        command = [sys.executable, os.path.abspath(__file__), "--only-tf32", "--out", out, "--threads",
                   str(args.threads), "--calls", str(args.calls), "--hidden", str(args.hidden), "--intermediate",
                   str(args.intermediate), "--layers", str(args.layers), "--rows", *map(str, args.rows)]
        subprocess.run(command, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}, check=True)
        with open(out, encoding="utf-8") as f:
            return {rows: stats[TF32] for rows, stats in json.load(f)["results"].items()}


def table(results: Dict[str, Dict[str, dict]]) -> List[str]:
    engines = list(next(iter(results.values())))
    lines = ["| rows (batch x tokens) | " + " | ".join(f"{e} p50 ms" for e in engines)
             + (f" | {TF32} / {ORT32} | {TFBF16} / {ORT32}" if ORT32 in engines else "") + " |",
             "|---:|" + "---:|" * (len(engines) + (2 if ORT32 in engines else 0))]
    for rows, stats in results.items():
        cells = [f"{stats[e]['p50_ms']:.2f}" for e in engines]
        if ORT32 in engines:
            cells += [f"{stats[TF32]['p50_ms'] / stats[ORT32]['p50_ms']:.2f}x",
                      f"{stats[TFBF16]['p50_ms'] / stats[ORT32]['p50_ms']:.2f}x"]
        lines.append(f"| {rows} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of both runtimes")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 16, 32, 128, 512])
    p.add_argument("--hidden", type=int, default=384, help="MiniLM-L6: 384")
    p.add_argument("--intermediate", type=int, default=1536, help="MiniLM-L6: 1536")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--calls", type=int, default=200, help="timed calls per engine and row count")
    p.add_argument("--onednn-off", action="store_true", help="add TF float32 timed in a child without oneDNN "
                                                              "(before the other engines, not interleaved)")
    p.add_argument("--only-tf32", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--docs", help="replace the matmul-kernels block of this Markdown file with the table")
    p.add_argument("--out", default="bench/results/matmul_kernels.json")
    args = p.parse_args(argv)
    benchlib.configure_tf_threads(args.threads)
    import tensorflow as tf

    machine = benchlib.machine_info()
    load = machine.get("loadavg_1_5_15", [float("nan")])[0]
    dense = 4 * args.layers
    print(f"{dense} dense layers ({args.hidden} -> {args.intermediate} wide, {args.layers} layers), {args.threads} "
          f"threads, TensorFlow {tf.__version__}; load average {load:.1f}", flush=True)
    off = onednn_off(args) if args.onednn_off else None
    results = measure(args)
    if off:
        for rows, stats in results.items():
            stats[TF32_NO_ONEDNN] = off[rows]
    lines = table(results)
    print("\n".join(lines))
    benchlib.write_json(args.out, {"benchmark": "matmul_kernels", "config": vars(args), "machine": machine,
                                   "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                                   "tensorflow": tf.__version__, "results": results})
    if args.docs:
        command = "python bench/matmul_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:])
        benchlib.replace_readme_block(args.docs, DOCS_START, DOCS_END, [
            f"`{command}` - the {dense} dense matmuls (+ bias) of MiniLM-L6 alone, {args.threads} threads, "
            f"TensorFlow {tf.__version__}, p50 of {args.calls} interleaved calls"
            + (" (oneDNN off: a child process run first)" if off else "")
            + f"; 1-minute load average {load:.1f} at start.", "", *lines])
    return 0


if __name__ == "__main__":
    sys.exit(main())
