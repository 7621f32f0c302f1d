"""The old home of the `blur-retrieval` entry point, kept so that a console script written by an
earlier `pip install -e .` (which imports `benchmark.cli:main`) still starts; the commands are in
`benchmark.commands`, and `pip install -e .` writes a script that imports them from there."""

from benchmark.commands.main import main

__all__ = ["main"]

if __name__ == "__main__":  # `python -m benchmark.cli` keeps running the commands too
    main()
