"""Metrics, the blur-level evaluation protocol, reports, plots and speed measurements."""
