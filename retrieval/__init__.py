"""Pixels to vectors: the motion-blur simulator, the blur-aware network, training and embedding."""

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blur-retrieval")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Messages are the importing program's to show: without its set-up they go nowhere.
logging.getLogger(__name__).addHandler(logging.NullHandler())
