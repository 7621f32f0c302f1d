"""Where the costly per-block work (decoding or rendering, then embedding) runs: in this process,
or spread over a Ray cluster's CPUs and GPUs with one model copy per worker.

Callers hand an engine a picklable *worker factory* and a list of jobs; the engine builds one
worker per process and yields each job's result as it finishes, in any order, so the caller can
save every finished block at once and a rerun redoes only the blocks that were not saved.
"""
