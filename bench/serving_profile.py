"""Where serving time goes: per-op-category time inside the exported classifier's ``serving_default``.

Issue #13 item 1. For each ``--optimize`` export (default ``none``, ``compact``, ``compact+xla``) of one model
and batches of 1 and 32 texts, in one process:

1. The export is loaded the way TF Serving loads it: a TF1 graph in a ``tf.compat.v1.Session``, the signature
   run by its SignatureDef tensor names. ``RunOptions(trace_level=FULL_TRACE)`` + ``RunMetadata.step_stats``
   report every executed node, including those of the signature's functions: the session's graph optimizer
   inlines the function calls, so no xplane parsing is needed. The exception is compact+xla's ``jit_compile``
   function, which stays one call node (category ``xla cluster``): its ops run inside XLA, not one by one.
   The traced session has ``inter_op_parallelism_threads=1`` (its own pool), so nodes run one at a time and
   their times add up; intra-op threads = ``--threads``. Op types go to categories by type and, for generic
   ops, name scope (``tokenizer``: tf-text, string and ragged ops and every op under a ``Ragged*`` scope,
   i.e. the ragged bookkeeping and its asserts; generic ops under ``LayerNorm``/``Gelu``/``Tensordot``
   scopes go to layer norm/activation/reshape; ``matmul`` includes BiasAdd; ``xla cluster``: _Xla* ops and
   function calls left after inlining). A heuristic: the JSON's ``top_ops`` (by category and op type) shows
   what went where.
2. Python/gRPC overhead of the embedded server: p50 of one batch-1 ``GrpcClient`` against
   ``serving.ModelServer`` minus the p50 of the TF2-loaded signature called in-process, same texts,
   interleaved call by call.

Every case is called ``--requests`` times at batch 1 (``--batch-calls`` at batch 32) traced and as often
untraced in each session, all cases taking turns call by call (``benchlib.interleaved``), so a busy minute
hits them alike. Columns of the first table (µs per call; traced numbers are medians over the traced calls,
per category, so the categories add up to the op time; critical path and span are the median ratio / gap to
each traced call's own op time applied to that median, so they never exceed / undercut it by noise alone):

- nodes: nodes executed in one call (constants and variable handles count: the executor schedules them);
- op time: sum of the nodes' kernel times (op start to op end); = the categories' sum;
- critical path: the longest input-dependency chain weighted by kernel time, i.e. the floor a parallel
  inter-op pool could reach without any per-op cost;
- traced span: first node start to last node end of the traced call (kernel time + executor gaps; the
  tracing's own per-node bookkeeping falls into the gaps, so this over-states them);
- wall (inter-op 1): median untraced ``Session.run`` time of the same session from Python (feed/fetch
  conversion included); wall - op time is then the executor's per-node scheduling cost plus the Python
  call, since this session runs one node at a time (it can come out slightly negative: medians of
  different calls, and a traced kernel is a little slower than an untraced one);
- wall (inter-op N): the same call in a session with ``--threads`` inter-op threads, as TF Serving would run.
Limits: kernel times are wall times on a machine that other processes share; intra-op threads run inside a
kernel's time; batch-1 inputs cycle ``POOL[1]`` texts, so the mix of lengths matters more than their order.

    python bench/serving_profile.py                                     # MiniLM-L6, random head, ~4-6 min
    python bench/serving_profile.py --checkpoint tiny --optimize none compact --requests 20 \\
        --batch-calls 4                                                 # smoke run (~1 min)
    python bench/serving_profile.py --docs docs/benchmarks.md           # also fill its serving-profile block

Writes bench/results/serving_profile.md and .json. No tests: a benchmark whose numbers only mean something
on a quiet machine; its pieces (export, server, loader) are tested where they live.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `serving` from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

from tfpipeline.config.commands import (  # noqa: E402  (first: sets TF_USE_LEGACY_KERAS)
    EXPORT_OPTIMIZATIONS, OPTIMIZE_COMPACT, OPTIMIZE_COMPACT_XLA, OPTIMIZE_NONE)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from serving import GrpcClient, ModelServer  # noqa: E402  (importing serving registers the tf-text ops)
from serving_batching import build_bundle  # noqa: E402
from serving_latency import sample_texts  # noqa: E402  (short texts of 6-40 common words)

BATCH_SIZES = (1, 32)
POOL = {1: 16, 32: 4}              # distinct inputs per batch size, cycled (all warmed: XLA compiles per shape)
DOCS_START, DOCS_END = "<!-- serving-profile:start -->", "<!-- serving-profile:end -->"
CATEGORIES = ("tokenizer", "embeddings/gather", "matmul", "softmax", "layer norm", "activation",
              "reshape/shape", "xla cluster", "other")
TEXT_OPS = re.compile(r"UTF8|Wordpiece|Regex|^String|^Unicode|^Ragged|^Substr|^AsString")
OP_CATEGORIES = {op: category for category, ops in {
    "embeddings/gather": "ResourceGather GatherV2 Gather GatherNd OneHot",
    "matmul": "MatMul FusedMatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum FusedEinsum BiasAdd",
    "softmax": "Softmax LogSoftmax",
    "layer norm": "LayerNorm FusedBatchNorm FusedBatchNormV3 SquaredDifference Rsqrt",
    "activation": "Erf Erfc Gelu Tanh Relu Sigmoid",
    "reshape/shape": "Reshape Transpose Shape ShapeN Size Rank StridedSlice Slice Squeeze ExpandDims ConcatV2 "
                     "Pack Unpack Split SplitV Tile Fill Range Pad PadV2 BroadcastTo",
}.items() for op in ops.split()}
SCOPES = (("layernorm", "layer norm"), ("gelu", "activation"), ("tensordot", "reshape/shape"))  # generic ops
TRACE = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE, output_partition_graphs=True)


def category(op: str, node: str) -> str:
    """The category of one executed node (``op``: its type, oneDNN's ``_Mkl``/``_MklNative`` prefix allowed)."""
    if op.startswith("_Xla") or op in ("XlaLaunch", "StatefulPartitionedCall", "PartitionedCall"):
        return "xla cluster"
    base, scope = re.sub(r"^_Mkl(Native)?|^_", "", op), node.lower()
    if TEXT_OPS.search(base) or "/ragged" in scope:
        return "tokenizer"
    by_type = OP_CATEGORIES.get(base, "other")
    if by_type in ("embeddings/gather", "reshape/shape", "other"):      # generic ops: the name scope decides
        return next((name for word, name in SCOPES if word in scope.replace("_", "")), by_type)
    return by_type


def model_name(optimize: str) -> str:
    return "bench_" + re.sub(r"\W", "_", optimize)


def open_session(path: str, inter_op: int, intra_op: int):
    """A TF1 session on the export (own inter-op pool) and ``run(feed, **run_kwargs)`` of its serving_default."""
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op, inter_op_parallelism_threads=inter_op,
                                      use_per_session_threads=True)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def["serving_default"]
    fetch = {key: value.name for key, value in signature.outputs.items()}
    text = signature.inputs["text"].name
    return session, lambda feed, **kwargs: session.run(fetch, {text: feed}, **kwargs)


def cycle(call, inputs: list):
    """``f(i)`` = ``call(inputs[i % len(inputs)])``, the shape ``benchlib.interleaved`` times."""
    return lambda i: call(inputs[i % len(inputs)])


def trace(run, feed) -> dict:
    """One FULL_TRACE call: µs and nodes per category, per op type, critical path and span."""
    meta = tf.compat.v1.RunMetadata()
    run(feed, options=TRACE, run_metadata=meta)
    graph = {node.name: (node.op, [name.lstrip("^").split(":")[0] for name in node.input])
             for partition in meta.partition_graphs for node in partition.node}
    stats = [s for device in meta.step_stats.dev_stats for s in device.node_stats if s.node_name in graph]
    # per category: µs and nodes; ops: (count, µs) by (category, op type)
    result = {"us": dict.fromkeys(CATEGORIES, 0.0), "nodes": dict.fromkeys(CATEGORIES, 0), "ops": {}}
    finish = {}
    for s in sorted(stats, key=lambda s: s.all_start_nanos):        # a serial run: inputs finish first
        op, inputs = graph[s.node_name]
        us = (s.op_end_rel_nanos - s.op_start_rel_nanos) / 1000.0
        name = category(op, s.node_name)
        result["us"][name] += us
        result["nodes"][name] += 1
        count, total = result["ops"].get((name, op), (0, 0.0))
        result["ops"][name, op] = (count + 1, total + us)
        finish[s.node_name] = us + max((finish.get(i, 0.0) for i in inputs), default=0.0)
    result["critical_path_us"] = max(finish.values())
    result["span_us"] = (max(s.all_start_nanos + s.all_end_rel_nanos for s in stats)
                         - min(s.all_start_nanos for s in stats)) / 1000.0
    return result


def summarize_traces(traces: list) -> dict:
    """Medians over the traced calls: per category, so the categories add up to ``op_us``; critical path and
    span as the median ratio / gap to each call's own op time, so they stay comparable with ``op_us``."""
    def med(values):
        return float(statistics.median(values))
    us = {c: med([t["us"][c] for t in traces]) for c in CATEGORIES}
    op_us = sum(us.values())
    own = [sum(t["us"].values()) for t in traces]
    ops = {key: [med([t["ops"].get(key, (0, 0.0))[i] for t in traces]) for i in (0, 1)]
           for key in {key for t in traces for key in t["ops"]}}
    top = sorted(ops.items(), key=lambda item: -item[1][1])[:20]
    return {"traces": len(traces), "us": us, "op_us": op_us,
            "nodes": {c: med([t["nodes"][c] for t in traces]) for c in CATEGORIES},
            "critical_path_us": op_us * med([t["critical_path_us"] / o for t, o in zip(traces, own)]),
            "span_us": op_us + med([t["span_us"] - o for t, o in zip(traces, own)]),
            "top_ops": [{"category": c, "op": op, "nodes": n, "us": u} for (c, op), (n, u) in top]}


def profile_graphs(exports: dict, inputs: dict, args) -> dict:
    """Traced breakdown (inter-op 1) and interleaved untraced walls (inter-op 1 and ``--threads``) per case."""
    sessions, runs = [], {}
    for optimize, path in exports.items():
        for inter_op in sorted({1, args.threads}):
            session, run = open_session(path, inter_op, args.threads)
            sessions.append(session)
            for batch_size in BATCH_SIZES:
                feeds = [np.array([t.encode() for t in batch], dtype=object) for batch in inputs[batch_size]]
                for feed in feeds:
                    run(feed)
                runs[optimize, batch_size, inter_op] = (run, feeds)
    traces = {key[:2]: [] for key in runs}      # (optimize, batch size): traced calls of the inter-op 1 session
    walls = {}
    for batch_size in BATCH_SIZES:              # traced calls take turns with the untraced ones, like them
        calls = {}
        for (optimize, batch, inter_op), (run, feeds) in runs.items():
            if batch == batch_size:
                calls[optimize, batch, inter_op] = cycle(run, feeds)
            if batch == batch_size and inter_op == 1:
                calls[optimize, batch, "traced"] = cycle(
                    lambda feed, run=run, out=traces[optimize, batch]: out.append(trace(run, feed)), feeds)
        times = benchlib.interleaved(calls, args.requests if batch_size == 1 else args.batch_calls, warmup=0)
        walls.update({key: 1e6 * statistics.median(timing["wall"]) for key, timing in times.items()})
    results = {case: summarize_traces(traced) for case, traced in traces.items()}
    for (optimize, batch_size, inter_op), wall in walls.items():
        if inter_op != "traced":
            results[optimize, batch_size][f"wall_us_inter_op_{inter_op}"] = wall
    for session in sessions:
        session.close()
    return results


def grpc_overhead(base: str, exports: dict, texts: list, args) -> dict:
    """Per export: p50 ms of batch-1 gRPC vs the in-process TF2 signature, same texts, interleaved."""
    batches = [[text] for text in texts]
    calls, clients, loaded = {}, [], []
    with ModelServer(base, grpc_port=0, rest_port=None, poll_seconds=0) as server:
        for optimize, path in exports.items():
            loaded.append(tf.saved_model.load(path))
            signature = loaded[-1].signatures["serving_default"]
            clients.append(GrpcClient(server.grpc_target, model_name(optimize)))
            calls[optimize, "in-process"] = cycle(lambda batch, s=signature: s(text=tf.constant(batch)), batches)
            calls[optimize, "gRPC"] = cycle(clients[-1].predict_texts, batches)
        for call in calls.values():
            for i in range(len(batches)):
                call(i)
        times = benchlib.interleaved(calls, args.requests)
        for client in clients:
            client.close()
    p50 = {key: benchlib.summarize(timing["wall"])["p50_ms"] for key, timing in times.items()}
    return {optimize: {"in_process_p50_ms": p50[optimize, "in-process"], "grpc_p50_ms": p50[optimize, "gRPC"],
                       "overhead_ms": p50[optimize, "gRPC"] - p50[optimize, "in-process"]} for optimize in exports}


def markdown(report: dict) -> list:
    """The report's tables, without a title (the docs block has its own heading)."""
    machine, threads = report["machine"], report["threads"]
    load = machine.get("loadavg_1_5_15")
    cases = report["graph"]
    lines = [f"`{report['command']}` - {report['model']}, max length {report['max_length']}, {threads} TF threads; "
             f"{machine['cpus']} CPUs, TensorFlow {machine['tensorflow']}"
             + (f", load average {load[0]:.1f} at start" if load else "") + ".",
             f"TF1 Session; medians of {report['requests']} (batch 1) / {report['batch_calls']} (batch 32) calls "
             "per case, traced (inter-op 1) and untraced, interleaved. µs per call; the columns are explained in "
             "the script's docstring.", "",
             "| export | batch | nodes | op time µs | critical path µs | traced span µs | wall µs (inter-op 1) | "
             f"wall - op time µs | wall µs (inter-op {threads}) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        c = case["profile"]
        wall1, wall_n = c["wall_us_inter_op_1"], c[f"wall_us_inter_op_{threads}"]
        lines.append(f"| {case['optimize']} | {case['batch_size']} | {sum(c['nodes'].values()):.0f} | "
                     f"{c['op_us']:.0f} | {c['critical_path_us']:.0f} | {c['span_us']:.0f} | {wall1:.0f} | "
                     f"{wall1 - c['op_us']:.0f} | {wall_n:.0f} |")
    lines += ["", "Op time per category: µs per call (share of op time, nodes).", "",
              "| category | " + " | ".join(f"{c['optimize']}, batch {c['batch_size']}" for c in cases) + " |",
              "|---|" + "---:|" * len(cases)]
    for name in CATEGORIES:
        cells = [f"{c['profile']['us'][name]:.0f} ({c['profile']['us'][name] / c['profile']['op_us']:.0%}, "
                 f"{c['profile']['nodes'][name]:.0f})" for c in cases]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Python/gRPC overhead of the embedded server, batch 1 (p50 of {report['requests']} calls each, "
                  "interleaved):", "", "| export | in-process signature p50 ms | gRPC p50 ms | gRPC - in-process ms |",
              "|---|---:|---:|---:|"]
    for optimize, g in report["grpc"].items():
        lines.append(f"| {optimize} | {g['in_process_p50_ms']:.2f} | {g['grpc_p50_ms']:.2f} | {g['overhead_ms']:.2f} |")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="minilm", help="'minilm' (default), 'tiny' (random 2-layer BERT) "
                                                               "or a checkpoint folder; random classification head")
    parser.add_argument("--model-dir", help="profile this trained model folder instead")
    parser.add_argument("--optimize", nargs="+", default=[OPTIMIZE_NONE, OPTIMIZE_COMPACT, OPTIMIZE_COMPACT_XLA],
                        choices=EXPORT_OPTIMIZATIONS, help="export optimisations to profile (see tfpipeline export)")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="TF intra-op threads (and inter-op outside the trace)")
    parser.add_argument("--requests", type=int, default=200, help="batch-1 calls per case, traced and untraced "
                                                                  "per session; gRPC and in-process calls")
    parser.add_argument("--batch-calls", type=int, default=40, help="batch-32 calls per case, traced and untraced")
    parser.add_argument("--out", default="bench/results/serving_profile.md")
    parser.add_argument("--docs", help="also rewrite the serving-profile block of this Markdown file")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    benchlib.configure_tf_threads(args.threads)
    machine = {**benchlib.machine_info(), "tensorflow": tf.__version__}
    texts = sample_texts(POOL[1] + 32 * POOL[32], seed=0)
    inputs = {1: [[text] for text in texts[:POOL[1]]], 32: [texts[i:i + 32] for i in range(0, 32 * POOL[32], 32)]}
    with tempfile.TemporaryDirectory() as root:
        bundle = build_bundle(args, root)
        base = os.path.join(root, "exports")
        exports = {optimize: bundle.export(base, model_name(optimize), optimize=optimize)
                   for optimize in args.optimize}
        graph = profile_graphs(exports, inputs, args)
        grpc = grpc_overhead(base, exports, texts[:POOL[1]], args)
    command = " ".join(["python", "bench/serving_profile.py"] + list(sys.argv[1:] if argv is None else argv))
    report = {"benchmark": "serving_profile", "command": command, "model": args.model_dir or args.checkpoint,
              "max_length": args.max_length, "threads": args.threads,
              "requests": args.requests, "batch_calls": args.batch_calls, "machine": machine,
              "graph": [{"optimize": o, "batch_size": b, "profile": graph[o, b]}
                        for o in args.optimize for b in BATCH_SIZES], "grpc": grpc}
    lines = markdown(report)
    text = "\n".join(["# Where serving time goes", ""] + lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    json_path = benchlib.write_json(os.path.splitext(args.out)[0] + ".json", report)
    if args.docs:
        benchlib.replace_readme_block(args.docs, DOCS_START, DOCS_END, lines)
    print(f"written to {args.out} and {json_path}" + (f"; {args.docs} updated" if args.docs else ""))
    return report


if __name__ == "__main__":
    main()
