"""The life of a FAISS index: build, persist, load, search, add, remove.

Start at `indexer.api` (`build_index`, `open_index`); the commands are in `benchmark.commands.index`.
"""

import logging

# Messages are the importing program's to show: without its set-up they go nowhere.
logging.getLogger(__name__).addHandler(logging.NullHandler())
