"""The index generation a server answers from, swapped for a newer one when another process saves.

`index add` and `index remove` write new generation files and then replace manifest.json in one
rename (see `indexer.store`). Checking that file's identity is one stat call, so every request can
afford it. The request that notices a new manifest loads the new generation; meanwhile every
other request keeps searching the old one, which stays complete in memory (its mapped file stays
readable after the writer deletes it), so no search ever sees half an update.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from indexer.errors import IndexStoreError
from indexer.index import RetrievalIndex, open_index
from indexer.store import MANIFEST_NAME

LOG = logging.getLogger(__name__)

Stamp = tuple[int, int, int]


class LiveIndex:
    """A read-only index that follows the folder's committed generations."""

    def __init__(self, directory: str | os.PathLike, device: str) -> None:
        self.directory = Path(directory)
        self._device = device
        self._lock = threading.Lock()
        self._stamp = self._manifest_stamp()
        self._index = open_index(self.directory, mmap=True, device=device)

    def current(self) -> RetrievalIndex:
        """The newest fully loaded generation; loads a newer one first if this caller noticed it."""
        stamp = self._manifest_stamp()
        if stamp != self._stamp and self._lock.acquire(blocking=False):
            try:
                if stamp != self._stamp:
                    self._reload(stamp)
            finally:
                self._lock.release()
        return self._index

    def _reload(self, stamp: Stamp | None) -> None:
        old = self._index
        self._stamp = stamp  # a broken save is retried when the manifest changes again, not per request
        try:
            fresh = open_index(self.directory, mmap=True, device=self._device)
        except IndexStoreError as error:
            LOG.warning("%s changed but cannot be loaded (%s); still serving generation %d",
                        self.directory, error, old.manifest.generation)
            return
        if fresh.fingerprint != old.fingerprint:
            LOG.warning("%s: generation %d comes from another model (fingerprint %s); still serving "
                        "generation %d", self.directory, fresh.manifest.generation,
                        fresh.fingerprint, old.manifest.generation)
            return
        self._index = fresh
        LOG.info("%s: now serving generation %d (%d vectors)", self.directory,
                 fresh.manifest.generation, fresh.count)

    def _manifest_stamp(self) -> Stamp | None:
        """Identity of manifest.json: a rename over it changes the inode, an edit the mtime."""
        try:
            info = os.stat(self.directory / MANIFEST_NAME)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)
