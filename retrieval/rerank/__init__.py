"""Geometric re-ranking of retrieval candidates: dense descriptor matching and robust transform fitting."""
