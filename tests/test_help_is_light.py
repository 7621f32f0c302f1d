"""`blur-retrieval --help` and every `<command> --help` answer without importing torch (which
takes seconds): the command modules import only light modules until a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from benchmark.commands.main import main

HEAVY = ("torch", "timm", "faiss")

PROGRAM = """
import json, sys
import click
from click.testing import CliRunner
from benchmark.commands.main import main

def paths(group, prefix):
    for name, command in group.commands.items():
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from paths(command, [*prefix, name])

answers = {}
for args in [[], *paths(main, [])]:
    result = CliRunner().invoke(main, [*args, "--help"])
    answers[" ".join(args) or "(main)"] = [result.exit_code, result.output.splitlines()[0]]
print(json.dumps({"answers": answers, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[str]:
    names = set()
    for name, command in group.commands.items():
        names.add(" ".join((*prefix, name)))
        if isinstance(command, click.Group):
            names |= _all_commands(command, (*prefix, name))
    return names


def test_help_of_every_command_imports_no_torch():
    program = f"HEAVY = {HEAVY!r}\n{PROGRAM}"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, check=True)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["heavy"] == []
    assert set(report["answers"]) == {"(main)"} | _all_commands(main)
    for command, (status, first_line) in report["answers"].items():
        assert status == 0, command
        assert first_line.startswith("Usage: "), command


def test_every_command_is_still_there():
    assert _all_commands(main) == {
        "bench", "bench index", "bench map", "bench merge", "bench sim", "bench speed", "demo",
        "index", "index add", "index build", "index dense", "index info", "index remove", "query",
        "serve", "synth", "train", "train-dense", "video-set",
    }


def test_python_m_runs_the_same_program():
    done = subprocess.run([sys.executable, "-m", "benchmark.commands", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("Usage: blur-retrieval ")
    assert "video-set" in done.stdout
