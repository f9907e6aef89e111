"""The README's CLI table and its sentence about shared options match the commands themselves."""

import re
from pathlib import Path

import typer

from longalign.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> dict[str, set[str]]:
    """Every command path ("pack", "components export") with its option names."""
    found: dict[str, set[str]] = {}

    def visit(command, prefix):
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                visit(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = {opt for param in command.params for opt in param.opts + param.secondary_opts}

    visit(typer.main.get_command(app), "")
    return found


def _table() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `longalign (.+?)` \|", line)
        if match:
            words = match.group(1).split(" ")
            n = next((i for i, w in enumerate(words) if not re.fullmatch(r"[a-z]+", w)), len(words))
            rows[" ".join(words[:n])] = " ".join(words[n:])
    return rows


def test_every_command_is_in_the_table_with_options_it_has():
    commands, table = _commands(), _table()
    assert sorted(table) == sorted(commands)
    for name, synopsis in table.items():
        options = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", synopsis.replace("\\|", "|")))
        assert options <= commands[name], (name, options - commands[name])


def test_shared_options_sentence_names_exactly_the_commands_that_take_them():
    commands = _commands()
    (listing,) = re.findall(r"^Commands that take `--preset`[^:]*:(.*?)\(", README.read_text(),
                            re.MULTILINE | re.DOTALL)
    named = set(re.findall(r"`([a-z ]+)`", listing))
    takes = {name for name, opts in commands.items() if {"--preset", "--config", "--set"} <= opts}
    assert named == takes
