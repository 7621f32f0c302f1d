"""The life of a FAISS index: build, persist, load, search, add, remove.

Start at `indexer.api` (`build_index`, `open_index`); `indexer.cli` holds the commands.
"""
