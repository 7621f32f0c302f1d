"""The Python door to an index: build one, open it, search, add, remove, save.

    index, report = build_index(source_from_folder("db/"), embedder, "my-index")
    index = open_index("my-index")                  # memory-mapped, read-only, shareable
    scores, ids = index.search_vectors(queries, k=10)
    found = rerank_search(index, ["q.jpg"], embedder, reranker, k=10, rerank_k=50,
                          views=read_cache("my-index", view_models("dense", "blur-aware")))
"""

from indexer.build import build_index
from indexer.errors import IndexStoreError
from indexer.index import Hit, ImageSearch, IngestResult, QueryHits, RetrievalIndex, open_index
from indexer.rerank.cache import ViewModels, read_cache, view_models
from indexer.rerank.search import RerankedQuery, rerank_search
from indexer.sources import (
    Source,
    source_from,
    source_from_folder,
    source_from_manifest,
    source_from_paths,
)

__all__ = [
    "Hit",
    "ImageSearch",
    "IndexStoreError",
    "IngestResult",
    "QueryHits",
    "RerankedQuery",
    "RetrievalIndex",
    "Source",
    "ViewModels",
    "build_index",
    "open_index",
    "read_cache",
    "rerank_search",
    "source_from",
    "source_from_folder",
    "source_from_manifest",
    "source_from_paths",
    "view_models",
]
