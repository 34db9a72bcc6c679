"""Readers for the files that say how the project is installed: the hashed locks (requirements/),
the Makefile and the Dockerfile. Just enough of each syntax for the tests to hold them to each other
and to pyproject.toml, so that none of them can drift from the others unnoticed."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK_DIR = ROOT / "requirements"
LOCK_FILES = ("build.txt", "runtime.txt", "dev.txt")


@dataclass(frozen=True)
class Pin:
    """One locked package: `name==version` and the hashes pip must see."""

    name: str
    version: str
    hashes: tuple[str, ...]
    line: str


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined and comments dropped (requirements and Docker
    files both continue lines with a trailing backslash)."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)$")


def read_lock(name: str) -> dict[str, Pin]:
    """The pins of requirements/<name>, by canonical name. Any line that is not an exact pin (an
    option, a range, a URL, an editable) is kept under its own text so a test can reject it."""
    pins: dict[str, Pin] = {}
    for line in logical_lines((LOCK_DIR / name).read_text()):
        line = line.split(" #", 1)[0].strip()
        match = _PIN.match(line)
        if match is None:
            pins[line] = Pin(line, "", (), line)
            continue
        hashes = tuple(re.findall(r"--hash=(\S+)", match["rest"]))
        key = canonicalize_name(match["name"])
        pins[key] = Pin(key, match["version"], hashes, line)
    return pins


def makefile_variables(text: str) -> dict[str, str]:
    """The Makefile's simple assignments (`:=`, `?=`, `=`; a trailing backslash continues one),
    unexpanded."""
    variables = {}
    for line in logical_lines(text):
        match = re.match(r"^(?:export\s+)?([A-Z_][A-Z0-9_]*)\s*(?::=|\?=|=)\s*(.*)$", line)
        if match:
            variables[match[1]] = match[2]
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    """`$(NAME)` replaced by its value until none known is left (unknown ones stay as written)."""
    for _ in range(10):
        expanded = re.sub(
            r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), text.replace("\\\n", " ")
        )
        if expanded == text:
            break
        text = expanded
    return text


@dataclass(frozen=True)
class Rule:
    """A Makefile rule: its prerequisites and recipe lines, variables expanded."""

    prerequisites: tuple[str, ...]
    recipe: tuple[str, ...]


def makefile_rule(text: str, target: str) -> Rule:
    """The rule whose target, as written, is `target`; recipe lines with continuations joined."""
    variables = makefile_variables(text)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"{target}:"):
            prerequisites = expand(line.split(":", 1)[1], variables).split()
            body = []
            for follow in lines[index + 1 :]:
                if not follow.startswith("\t"):
                    break
                body.append(follow[1:])
            recipe = tuple(expand(line, variables) for line in logical_lines("\n".join(body)))
            return Rule(tuple(prerequisites), recipe)
    raise AssertionError(f"no rule for {target} in the Makefile")


@dataclass
class Stage:
    """One `FROM` stage of a Dockerfile: its image and its instructions in order."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, each instruction as (KEYWORD, arguments)."""
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = shlex.split(args)
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def pip_installs(command: str) -> list[list[str]]:
    """Each `pip install ...` in a shell command (split at && and ;), as its argument words:
    `pip install`, `/x/bin/pip install` and `python -m pip install` alike."""
    installs = []
    for part in re.split(r"&&|;|\|\|", command):
        words = shlex.split(part)
        for index in range(len(words) - 1):
            if words[index].endswith("pip") and words[index + 1] == "install":
                installs.append(words[index + 2 :])
    return installs
