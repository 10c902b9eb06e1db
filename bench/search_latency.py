"""Latency of an embedding export's ``search`` signature as the document index grows.

Why: ``search`` is an exact top-k by one matrix product inside the SavedModel;
that is only the right design while the product stays small next to encoding
the query. This exports MiniLM (untuned: the weights do not change the cost)
with indexes of random unit vectors of growing size and times batch-1
``search`` against batch-1 ``embed`` of the same query (the baseline, same
process, interleaved), so the ratio is the price of the index.

    python bench/search_latency.py                       # 1k, 10k, 100k documents
    python bench/search_latency.py --sizes 1000 10000 --requests 30
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tfpipeline  # noqa: E402,F401

import benchlib  # noqa: E402

QUERIES = ["where is my parcel", "how do I reset my password please", "refund", "do you ship to norway"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--out", default=os.path.join("bench", "results", "search_latency.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from tfpipeline.bundle import ModelBundle
    from tfpipeline.data.examples import EMBEDDING
    from tfpipeline.data.tokenization import TextEncoder
    from tfpipeline.export.signatures import DocumentIndex
    from tfpipeline.models.checkpoint import minilm_path
    from tfpipeline.models.embedding_model import build_embedding_model, similarity_labels

    bundle = ModelBundle(build_embedding_model(None), TextEncoder.from_directory(minilm_path(), max_length=64),
                         similarity_labels(), EMBEDDING)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as base:
        for size in args.sizes:
            vectors = rng.normal(size=(size, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index = DocumentIndex([f"doc-{i}" for i in range(size)], [f"document {i}" for i in range(size)],
                                  vectors, args.top_k)
            loaded = tf.saved_model.load(bundle.export(base, f"index{size}", index=index))
            embed, search = loaded.signatures["embed"], loaded.signatures["search"]
            queries = [tf.constant([q]) for q in QUERIES]
            times = benchlib.interleaved({"embed": lambda i: embed(text=queries[i % len(queries)]),
                                          "search": lambda i: search(text=queries[i % len(queries)])},
                                         args.requests)
            embed_ms = benchlib.summarize(times["embed"]["wall"])["p50_ms"]
            search_ms = benchlib.summarize(times["search"]["wall"])["p50_ms"]
            rows.append({"documents": size, "embed_p50_ms": embed_ms, "search_p50_ms": search_ms,
                         "ratio": search_ms / embed_ms})
            print(f"{size:>9,} documents: embed p50 {embed_ms:.1f} ms, search p50 {search_ms:.1f} ms "
                  f"({search_ms / embed_ms:.2f}x)")
    benchlib.write_json(args.out, {"rows": rows, "machine": benchlib.machine_info(), "args": vars(args)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
