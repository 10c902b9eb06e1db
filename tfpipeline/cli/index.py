"""``tfpipeline index``: embed a document file with an embedding model folder and export it with ``search``."""
from __future__ import annotations

from tfpipeline.bundle import ModelBundle
from tfpipeline.config import IndexConfig
from tfpipeline.data.documents import read_documents
from tfpipeline.data.readers import read_lines


def run(config: IndexConfig, args) -> int:
    ids, texts = read_documents(config.documents, id_column=config.id_column, text_column=config.text_column)
    bundle = ModelBundle.load(config.model_dir)
    index = bundle.document_index(texts, ids, top_k=config.top_k)
    warmup = read_lines(config.warmup_file) if config.warmup_file else None
    path = bundle.export(config.base_dir, config.name, version=config.version, warmup_texts=warmup, index=index,
                         optimize=config.optimize)
    print(f"[tfpipeline] indexed {len(ids):,} documents from {config.documents} with {config.model_dir}: {path}")
    return 0
