"""The README is the manual: every command and every option `--help` lists is in it,
in the command's own section."""

import re

import click
from helpers import ROOT

from ragbatch.cli import main

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(name: str) -> str:
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", README, flags=re.M | re.S)
    assert match, f"README has no '## {name}' section"
    return match.group(1)


def options(command: click.Command) -> list[str]:
    return [opt for param in command.params if isinstance(param, click.Option) for opt in param.opts if opt.startswith("--")]


def test_every_command_and_option_is_documented():
    assert all(opt in README for opt in options(main))  # --debug, --version
    for name, command in main.commands.items():
        text = section(name)
        assert f"ragbatch {name}" in text
        missing = [opt for opt in options(command) if not re.search(rf"{re.escape(opt)}\b", text)]
        assert not missing, f"README's '## {name}' section does not mention {missing}"
