"""Metrics, the blur-level evaluation protocol, reports, plots and speed measurements."""

import logging

# Messages are the importing program's to show: without its set-up they go nowhere.
logging.getLogger(__name__).addHandler(logging.NullHandler())
