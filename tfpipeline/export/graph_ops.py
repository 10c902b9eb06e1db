"""Which ops an export needs: decides which model servers can load it.

Core TF ops are everything in ``tf.raw_ops``; anything else must come from a
custom-op library the server links in (tensorflow-text for the tokenizer).
TF Serving 2.12+ bundles tensorflow-text, which has every op in
``CUSTOM_OPS_ALLOWED`` since 2.8 (checked in the 2.8.2 wheel). ``RoundRobinTrim`` (tf-text >= 2.10's
``RoundRobinTrimmer``) is deliberately not used.
"""
from __future__ import annotations

from typing import Iterable, Optional, Set

import tensorflow as tf

from tfpipeline.export.saved_model import read_saved_model_proto

CUSTOM_OPS_ALLOWED = frozenset({"NormalizeUTF8", "NormalizeUTF8WithOffsetsMap", "FindSourceOffsets",
                                "FastWordpieceTokenizeWithOffsets", "RegexSplitWithOffsets"})


def saved_model_ops(path: str, signature: Optional[str] = None) -> Set[str]:
    """Op types in the SavedModel, or only those reachable from one signature's outputs."""
    graph = read_saved_model_proto(path).meta_graphs[0].graph_def
    library = {f.signature.name: f for f in graph.library.function}
    if signature is None:
        ops = {n.op for n in graph.node}
        for fn in library.values():
            ops.update(n.op for n in fn.node_def)
        return ops

    sig = read_saved_model_proto(path).meta_graphs[0].signature_def.get(signature)
    if sig is None:
        raise KeyError(f"{path}: no signature {signature!r}")
    nodes = {n.name: n for n in graph.node}
    ops: Set[str] = set()
    seen_nodes: Set[str] = set()
    seen_functions: Set[str] = set()

    def visit_function(name: str) -> None:
        if name in seen_functions or name not in library:
            return
        seen_functions.add(name)
        for node in library[name].node_def:
            ops.add(node.op)
            _called(node, visit_function)
            if node.op in library:          # a function called directly as an op
                visit_function(node.op)

    stack = [t.name.split(":")[0] for t in sig.outputs.values()]
    while stack:
        name = stack.pop().lstrip("^")
        if name in seen_nodes or name not in nodes:
            continue
        seen_nodes.add(name)
        node = nodes[name]
        ops.add(node.op)
        _called(node, visit_function)
        stack.extend(i.split(":")[0] for i in node.input)
    return ops


def _called(node, visit) -> None:
    for attr in node.attr.values():
        if attr.HasField("func"):
            visit(attr.func.name)
        for fn in attr.list.func:
            visit(fn.name)


def custom_ops(ops: Iterable[str]) -> Set[str]:
    """The ops that are not part of core TensorFlow."""
    return {op for op in ops if not hasattr(tf.raw_ops, op)}
