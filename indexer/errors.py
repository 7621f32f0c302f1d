"""Exceptions of the index layer, one class per problem a caller may want to handle.

Every message names the file or folder involved so a user can act on it without a traceback.
"""

from __future__ import annotations

import re

from retrieval.devices import DeviceUnavailableError
from retrieval.fileio import UnwritablePathError


class IndexStoreError(Exception):
    """Base class: anything wrong with an index folder, its inputs or its use."""


class IndexFormatError(IndexStoreError):
    """The folder is not an index of this format version (missing or malformed manifest)."""


class IndexChecksumError(IndexStoreError):
    """A file named by the manifest does not match its recorded sha256: it was corrupted."""


class IndexExistsError(IndexStoreError):
    """A build would overwrite an existing index."""


class OutputPathError(IndexStoreError, UnwritablePathError):
    """An output location that cannot be written: an existing file, a file among its parents,
    or a folder without write permission. A usage error: the caller must name another place."""


class ConcurrentUpdateError(IndexStoreError):
    """Another process saved the index after this one opened it; saving would lose its work."""


class ReadOnlyIndexError(IndexStoreError):
    """The index was opened memory-mapped (shared, read-only) and cannot be modified."""


class FingerprintMismatchError(IndexStoreError):
    """Vectors or queries come from a model other than the one that built the index."""


class InvalidVectorsError(IndexStoreError, ValueError):
    """Vectors with the wrong shape, dtype or norm for this index."""


class InvalidFactoryError(IndexStoreError, ValueError):
    """A FAISS factory string that cannot be parsed or trained on the data given."""


class MemoryBudgetError(IndexStoreError, ValueError):
    """An --index-memory budget that no index of the vectors fits in."""


class InvalidQueryError(IndexStoreError, ValueError):
    """A search request the index cannot answer (k out of range, wrong dimension)."""


class UnknownItemError(IndexStoreError, KeyError):
    """A removal names ids or paths the index does not hold."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class UnsupportedOperationError(IndexStoreError):
    """The FAISS index type cannot do what was asked (e.g. remove from HNSW)."""


class SourceError(IndexStoreError):
    """A source of images or rows that cannot be indexed as given."""


class DeviceError(IndexStoreError, DeviceUnavailableError):
    """A device was requested that this machine (or its FAISS build) does not have."""


def faiss_reason(error: Exception) -> str:
    """FAISS messages lead with a C++ signature and source line; keep the reason only."""
    text = str(error).strip()
    match = re.match(r"Error in .*? at \S+:\d+: (?:Error: )?(.*)", text, re.DOTALL)
    return match.group(1).strip() if match else text
