"""Pixels to vectors: the motion-blur simulator, the blur-aware network, training and embedding."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blur-retrieval")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
