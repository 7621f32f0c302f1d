"""The Python door to an index: build one, open it, search, add, remove, save.

    index, report = build_index(source_from_folder("db/"), embedder, "my-index")
    index = open_index("my-index")                  # memory-mapped, read-only, shareable
    scores, ids = index.search_vectors(queries, k=10)
"""

from indexer.build import build_index
from indexer.errors import IndexStoreError
from indexer.index import Hit, ImageSearch, IngestResult, QueryHits, RetrievalIndex, open_index
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
    "RetrievalIndex",
    "Source",
    "build_index",
    "open_index",
    "source_from",
    "source_from_folder",
    "source_from_manifest",
    "source_from_paths",
]
