"""The locks in requirements/ are what every install uses (make venv, CI through it, the
Dockerfile), so they must say exactly what pyproject.toml asks for: every dependency it names
pinned `==` with hashes, at a version its range admits, with everything those packages need in
turn, and the same version wherever two locks share a package. `make venv` must install from them
and `make lock` must write them; a test failing here means: run `make lock`
(docs/development.md#dependencies)."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.build_files import (
    LOCK_FILES,
    ROOT,
    Pin,
    makefile_rule,
    makefile_variables,
    pip_installs,
    read_lock,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def _requirements(strings: list[str]) -> list[Requirement]:
    return [Requirement(s) for s in strings]


# What each lock must hold: the requirements pyproject states for it.
ROOTS: dict[str, list[Requirement]] = {
    "runtime.txt": _requirements(PYPROJECT["project"]["dependencies"]),
    "dev.txt": _requirements(
        PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["dev"]
    ),
    # pip itself is locked with the build backend: make venv and the image upgrade it from here.
    "build.txt": _requirements([*PYPROJECT["build-system"]["requires"], "pip"]),
}


@pytest.mark.parametrize("lock", LOCK_FILES)
def test_every_line_of_a_lock_is_an_exact_pin_with_hashes(lock: str) -> None:
    text = (ROOT / "requirements" / lock).read_text()
    pins = read_lock(lock)
    assert pins, lock
    for pin in pins.values():
        assert pin.version and pin.hashes, f"{lock}: not an exact pin with hashes: {pin.line}"
        assert all(h.startswith("sha256:") for h in pin.hashes), pin.line
    # No index, find-links or URL: where packages come from is the installer's configuration.
    assert "://" not in text and "--index-url" not in text and "--find-links" not in text


@pytest.mark.parametrize("lock", LOCK_FILES)
def test_every_dependency_pyproject_names_is_pinned_in_its_lock_within_its_range(lock: str) -> None:
    pins = read_lock(lock)
    for requirement in ROOTS[lock]:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement} is not in requirements/{lock}: run make lock"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"requirements/{lock} pins {pin.name}=={pin.version}, outside {requirement}: "
            "run make lock"
        )


def _needs(requirement: Requirement, extras: set[str]) -> list[Requirement]:
    """What an installed distribution requires for the given extras, on this interpreter and
    platform (the ones the locks are for: see test_the_locks_are_for_the_python_that_runs_them)."""
    needed = []
    for text in metadata.requires(requirement.name) or []:
        needs = Requirement(text)
        if needs.marker is None or any(
            needs.marker.evaluate({**default_environment(), "extra": extra})
            for extra in {"", *extras}
        ):
            needed.append(needs)
    return needed


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots need, transitively, with the extras asked of each."""
    asked: dict[str, set[str]] = {}
    queue = list(roots)
    while queue:
        requirement = queue.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in asked and extras <= asked[name]:
            continue
        asked[name] = asked.get(name, set()) | extras
        queue.extend(_needs(requirement, asked[name]))
    return set(asked)


@pytest.mark.parametrize("lock", LOCK_FILES)
def test_a_lock_holds_what_its_packages_need_and_nothing_else(lock: str) -> None:
    """Read from the metadata of the packages installed from the locks (make venv), so extras such
    as aiokafka[lz4] and psycopg[binary] count as well as plain dependencies."""
    needed = _closure(ROOTS[lock])
    assert needed == set(read_lock(lock)), f"requirements/{lock} is stale: run make lock"


def test_two_locks_never_pin_one_package_at_two_versions() -> None:
    seen: dict[str, tuple[str, Pin]] = {}
    for lock in LOCK_FILES:
        for name, pin in read_lock(lock).items():
            if name in seen:
                other_lock, other = seen[name]
                assert other.version == pin.version, (name, other_lock, lock)
            seen[name] = (lock, pin)


def test_the_locks_are_for_the_python_that_runs_them() -> None:
    """The Makefile resolves the locks for LOCK_PYTHON; the venv's interpreter (and the image's:
    test_deploy) must be that minor version, and pyproject must admit it."""
    locked = makefile_variables(MAKEFILE)["LOCK_PYTHON"]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == locked
    requires = Requirement(f"python{PYPROJECT['project']['requires-python']}")
    assert requires.specifier.contains(f"{locked}.0")


def test_make_venv_installs_the_locks_with_hashes_and_the_project_alone() -> None:
    rule = makefile_rule(MAKEFILE, "$(VENV)/.installed")
    # A changed lock reinstalls.
    assert {f"requirements/{lock}" for lock in LOCK_FILES} <= set(rule.prerequisites)
    installs = [args for line in rule.recipe for args in pip_installs(line)]
    locks_installed = []
    for args in installs:
        assert "--upgrade" not in args, "pip's version comes from the build lock too"
        if "-r" in args:
            assert "--require-hashes" in args, args
            assert "--no-deps" not in args, "pip checks a lock's completeness only with deps"
            locks_installed.append(args[args.index("-r") + 1])
        else:
            # The project itself, from this tree: no dependency of its own, built with the locked
            # setuptools rather than an unlocked one fetched for build isolation.
            assert args[-2:] == ["-e", "."], args
            assert {"--no-deps", "--no-build-isolation"} <= set(args), args
    assert locks_installed == ["requirements/build.txt", "requirements/dev.txt"]
    assert any("pip check" in line for line in rule.recipe)


def test_make_lock_writes_every_lock_with_hashes_for_linux_x86_64() -> None:
    rule = makefile_rule(MAKEFILE, "lock")
    written = [line.split(" -o ", 1)[1].split()[0] for line in rule.recipe if " -o " in line]
    assert sorted(written) == sorted(f"requirements/{lock}" for lock in LOCK_FILES)
    for line in rule.recipe:
        if " -o " in line:
            assert "pip compile" in line and "--generate-hashes" in line, line
            assert "--python-platform x86_64-unknown-linux-gnu" in line, line
            assert f"--python-version {makefile_variables(MAKEFILE)['LOCK_PYTHON']}" in line
