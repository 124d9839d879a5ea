"""The command line as a newcomer meets it: ``mlops --help`` and the model server's options."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def documented(parser: argparse.ArgumentParser) -> list[str]:
    """Options and positionals without help text (``--help`` itself aside)."""
    return [a.dest for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and not a.help]


def test_the_console_script_lists_every_command_with_a_line_each():
    from pipeline_tasks.ops.cli import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    out = subprocess.run([str(Path(sys.executable).parent / "mlops"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("usage: mlops")
    for name, sub in commands.choices.items():
        help_line = next(c.help for c in commands._choices_actions if c.dest == name)
        assert help_line and f"    {name}" in out, name
        assert documented(sub) == [], name


def test_every_model_server_option_has_help():
    from pipeline_tasks.serving.__main__ import build_parser

    assert documented(build_parser()) == []
