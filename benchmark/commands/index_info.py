"""The text of `index info`: what an index holds and how it was made, one fact per line."""

from __future__ import annotations

from typing import Any


def format_info(info: dict[str, Any]) -> str:
    """`RetrievalIndex.info()` (with the dense cache's summary) as aligned lines."""
    tuned = info["tuned"]
    if "recall" in tuned:
        probe = f"nprobe {tuned['nprobe']}, " if "nprobe" in tuned else ""
        probe += f"k_factor {tuned['k_factor']}, " if "k_factor" in tuned else ""
        search = (f"{probe}recall@{tuned['recall_k']} {tuned['recall']:.3f} on "
                  f"{tuned['queries']} queries (measured at {tuned['measured_on']} vectors)")
    else:
        search = "exact"
    model = info["model"]
    lines = {
        "directory": info["directory"],
        "vectors": info["count"],
        "next id": info["next_id"],
        "dimension": info["dim"],
        "metric": info["metric"],
        "factory": info["factory"],
        "search": search,
        "model": f"{model.get('name') or '?'} (fingerprint {model['fingerprint']})",
        "created": info["created"],
        "updated": f"{info['updated']} (generation {info['generation']})",
        "memory-mapped": "yes" if info["memory_mapped"] else "no",
        "dense cache": _format_cache(info["dense_cache"]),
        "format version": info["format_version"],
    }
    width = max(len(key) for key in lines)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in lines.items())


def _format_cache(cache: dict[str, Any] | None) -> str:
    from indexer.rerank.cache import size_summary

    if cache is None:
        return "none"
    if "error" in cache:
        return cache["error"]
    return (f"{size_summary(cache['views'], cache['bytes'])} ({cache['bytes']} bytes; "
            f"dense {cache['dense']}, locator {cache['locator']})")
