"""The README's options are the CLI's options: every `--option` the README names exists in the
`--help` of the command it is written for, every server option also has its PUSHPLAT_* variable,
and every Config tunable is reachable as a flag. README and CLI cannot drift apart unnoticed."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from pushplat.cli import env_name
from pushplat.config import Config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVER_COMMANDS = ("dev", "api", "router", "edge")
COMMANDS = (*SERVER_COMMANDS, "send", "listen", "token", "status", "presence")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")
# Options every argparse command has; not the README's promises.
GENERIC = {"--help", "--version"}


@cache
def help_text(command: str) -> str:
    argv = (
        [str(ROOT / "scripts" / "bench"), "--help"]
        if command == "bench"
        else [sys.executable, "-m", "pushplat", command, "--help"]
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed: {result.stderr}"
    return " ".join(result.stdout.split())


def help_options(command: str) -> set[str]:
    return set(OPTION.findall(help_text(command)))


def commands_in(text: str) -> set[str]:
    """The commands a piece of README text is about: `pushplat X` (X may be `api|router|edge`),
    scripts/run (which is `pushplat dev`) and scripts/bench."""
    found = set()
    for group in re.findall(r"pushplat ((?:[a-z]+\\?\|)*[a-z]+)", text):
        found |= {name for name in re.split(r"\\?\|", group) if name in COMMANDS}
    if "scripts/run" in text:
        found.add("dev")
    if "scripts/bench" in text:
        found.add("bench")
    return found


def readme_mentions() -> list[tuple[str, set[str], bool]]:
    """(option, commands it is written for, strict) for every option in the README.

    A table row and a command line in a code block name their command: the option must be in
    that command's help (strict). A prose paragraph may mix a command with server options
    (auth is described next to `pushplat token`): there the servers' help counts as well.
    Code lines that run other tools (protoc, go, npm) are not pushplat's options."""
    text = README.read_text()
    mentions: list[tuple[str, set[str], bool]] = []
    in_code = False
    paragraph: list[str] = []

    def flush() -> None:
        block = " ".join(paragraph)
        for option in OPTION.findall(block):
            mentions.append((option, commands_in(block), False))
        paragraph.clear()

    lines = text.replace("\\\n", " ").splitlines()
    for line in lines:
        if line.startswith("```"):
            flush()
            in_code = not in_code
            continue
        if in_code:
            command = line.split("#", 1)[0].strip()
            if command.startswith(("pushplat ", "scripts/")):
                mentions += [(o, commands_in(command), True) for o in OPTION.findall(command)]
        elif line.startswith("|"):
            flush()
            mentions += [(o, commands_in(line), bool(commands_in(line))) for o in OPTION.findall(line)]
        elif not line.strip():
            flush()
        else:
            paragraph.append(line)
    flush()
    return [m for m in mentions if m[0] not in GENERIC]


def test_the_readme_names_options_at_all():
    options = {option for option, _, _ in readme_mentions()}
    # A parser that finds nothing would pass everything below.
    assert {"--max-connections", "--max-connects-per-second", "--edge-port", "--at-least-once"} <= options


def test_every_readme_option_is_in_the_help_of_its_command():
    missing = []
    for option, commands, strict in readme_mentions():
        allowed = set(commands) if strict else set(commands) | set(SERVER_COMMANDS)
        if not any(option in help_options(command) for command in allowed or SERVER_COMMANDS):
            missing.append(f"{option} (README, for {' or '.join(sorted(allowed or SERVER_COMMANDS))})")
    assert not missing, "options the README promises but no --help has:\n" + "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_every_server_option_names_its_environment_variable(command):
    for option in help_options(command) - GENERIC:
        assert f"[env {env_name(option)}" in help_text(command), (
            f"pushplat {command} {option} has no PUSHPLAT_ variable"
        )


# Config fields that are not tunables of their own.
NOT_FLAGS = {"roles": "the command picks them", "api_keys": "--api-key", "internal_secrets": "--internal-secret"}


def test_every_config_tunable_is_a_flag_of_some_server_command():
    flags = set().union(*(help_options(command) for command in SERVER_COMMANDS))
    missing = [
        f.name
        for f in dataclasses.fields(Config)
        if f.name not in NOT_FLAGS and "--" + f.name.replace("_", "-") not in flags
    ]
    assert not missing, f"Config fields with no flag (and so no PUSHPLAT_ variable): {missing}"


def test_every_readme_config_name_is_a_flag():
    """A Config field written in the README as `snake_case` must also be reachable as a flag."""
    fields = {f.name for f in dataclasses.fields(Config)}
    named = set(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", README.read_text())) & fields
    flags = set().union(*(help_options(command) for command in SERVER_COMMANDS))
    assert all("--" + name.replace("_", "-") in flags for name in named), named


@pytest.mark.parametrize("command", SERVER_COMMANDS)
def test_every_server_option_is_in_the_readme(command):
    """The other way round: an option added to a server command is documented, not only in --help."""
    text = README.read_text()
    missing = sorted(o for o in help_options(command) - GENERIC if not re.search(re.escape(o) + r"(?![\w-])", text))
    assert not missing, f"pushplat {command} options the README never names: {missing}"


def test_the_command_table_has_one_row_per_command():
    """Rows were appended for new options beside the old ones: a reader got two, one stale."""
    text = README.read_text()
    table = text[text.index("## Command line") :].split("\n\n", 2)[1]
    rows = [re.match(r"\| `pushplat ([a-z|\\]+)", line) for line in table.splitlines()[2:]]
    names = [row.group(1) for row in rows if row]
    assert len(names) == len(table.splitlines()) - 2, "a row that is not a pushplat command"
    assert len(names) == len(set(names)), f"commands with more than one row: {names}"
    assert {"dev", "send", "listen", "token", "status", "presence", "topics"} <= set(names)
