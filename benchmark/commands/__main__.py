"""`python -m benchmark.commands ...` runs `blur-retrieval ...` (scripts that start a server)."""

from benchmark.commands.main import main

main(prog_name="blur-retrieval")
