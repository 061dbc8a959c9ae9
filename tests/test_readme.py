"""README.md and docs/*.md in step with the code: every flag a command there shows exists in that command's
--help, every script and Makefile target named exists (and every script runs in some test), every relative link
and anchor resolves, and every host-specific figure says its host. As tests/test_any_language.py keeps the curl
script docs/api.md shows verbatim.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
BIN = Path(sys.executable).parent
TOOLS = {"e2v-client", "e2v-export", "e2v-serve", "e2v-web"}
SUBCOMMANDS = {"e2v-export": {"make-test-checkpoint"}}
OPERATORS = {"|", "||", "&", "&&", ";", "(", ")", ";;"}
# scripts a test does not run, and why
NOT_RUN_BY_TESTS = {"setup.sh": "`make setup` itself: it makes the environment the tests run in"}
HOST_PAGES = ["performance.md", "operations.md"]  # whose ### sections are one host's figures each
README_MAX_LINES = 200


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_of(text: str) -> list[str]:
    """The shell a page shows: the lines of its bash blocks (continuations joined) and its inline code spans."""
    blocks = re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[a-z]*\n.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`([^`\n]+)`", prose)


def commands_in(line: str) -> list[list[str]]:
    """The simple commands of a shell line (comments dropped, split at pipes, &&, ; and &), as word lists."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes: not a line of ours
        return []
    commands, current = [], []
    for word in words:
        if word in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(word)
    return [c for c in [*commands, current] if c]


def invocation(words: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """(the command whose --help lists the flags, the words after it) for our tools, scripts and modules."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value before a command
        words = words[1:]
    if not words:
        return None
    name = Path(words[0]).name
    if name in TOOLS:
        rest = words[1:]
        if rest and rest[0] in SUBCOMMANDS.get(name, ()):
            return (str(BIN / name), rest[0]), rest[1:]
        return (str(BIN / name),), rest
    if re.fullmatch(r"python3?", name) and len(words) > 1:
        if words[1].startswith("scripts/") and words[1].endswith(".py"):
            return (sys.executable, str(ROOT / words[1])), words[2:]
        if words[1] == "-m" and len(words) > 2 and words[2].startswith("e2v_"):
            rest = words[3:]
            if rest and not rest[0].startswith("-"):
                return (sys.executable, "-m", words[2], rest[0]), rest[1:]
            return (sys.executable, "-m", words[2]), rest
    return None


def shown_commands() -> dict[tuple[str, ...], dict[str, set[str]]]:
    """{command: {flag: pages showing it}} over README.md and docs/*.md."""
    found: dict[tuple[str, ...], dict[str, set[str]]] = {}
    for page in PAGES:
        for line in code_of(page.read_text()):
            for words in commands_in(line):
                if (called := invocation(words)) is not None:
                    command, rest = called
                    flags = found.setdefault(command, {})
                    for word in rest:
                        if word.startswith("--"):
                            flags.setdefault(word.split("=", 1)[0], set()).add(rel(page))
    return found


@functools.cache
def help_text(command: tuple[str, ...]) -> str:
    done = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)} --help failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_flag_shown_is_in_its_commands_help():
    commands = shown_commands()
    tools = {Path(command[0]).name for command in commands} & TOOLS
    assert tools == TOOLS, f"README.md and docs/ should show every tool; found {sorted(tools)}"
    assert sum(len(flags) for flags in commands.values()) > 40  # the parsing finds the commands
    missing = []
    for command, flags in sorted(commands.items()):
        text = help_text(command)
        for flag, pages in sorted(flags.items()):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                shown = " ".join(Path(part).name if part.startswith("/") else part for part in command)
                missing.append(f"{shown} {flag} (in {', '.join(sorted(pages))})")
    assert not missing, "flags shown but not in the command's --help:\n" + "\n".join(missing)


def named_scripts() -> dict[str, set[str]]:
    """{scripts/NAME: where it is named} over README.md, docs/*.md and the Makefile."""
    named: dict[str, set[str]] = {}
    for path in [*PAGES, ROOT / "Makefile"]:
        for name in re.findall(r"\bscripts/([\w.-]+\.(?:py|sh))\b", path.read_text()):
            named.setdefault(name, set()).add(rel(path))
    return named


def test_every_script_named_exists_and_runs_in_a_test():
    named = named_scripts()
    assert {"bench.py", "load_test.py", "run.py"} <= set(named)  # the Makefile's, at least
    missing = sorted(f"scripts/{name} (in {', '.join(sorted(where))})" for name, where in named.items()
                     if not (ROOT / "scripts" / name).is_file())  # fmt: skip
    assert not missing, f"scripts named but missing: {missing}"
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_readme.py")
    not_run = sorted(name for name in named if name not in NOT_RUN_BY_TESTS and f'"{name}"' not in tests)
    assert not not_run, f"scripts named in README.md, docs/ or the Makefile that no test runs: {not_run}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE)) - {".PHONY"}


def test_every_make_target_shown_exists():
    targets = makefile_targets()
    assert {"run", "test", "setup"} <= targets
    shown = {}
    for page in PAGES:
        for line in code_of(page.read_text()):
            for words in commands_in(line):
                if words[0] == "make":
                    for target in words[1:]:
                        shown.setdefault(target, set()).add(rel(page))
    assert {"run", "test", "web", "bench"} <= set(shown)
    missing = sorted(f"make {t} (in {', '.join(sorted(pages))})" for t, pages in shown.items() if t not in targets)
    assert not missing, f"make targets shown but not in the Makefile: {missing}"


def test_readme_is_a_front_page_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md is the front page: reference goes to docs/"
    blocks = re.findall(r"^```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert any(block.startswith("make run    #") and "\nmake test   #" in block for block in blocks)
    for page in DOCS:
        assert f"(docs/{page.name})" in text or f"(docs/{page.name}#" in text, f"README.md does not link {page.name}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_and_anchors_resolve(page):
    text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{rel(page)}: links that do not resolve: {broken}"


def hosts() -> list[str]:
    """The hosts of docs/performance.md's Hosts table (its first column)."""
    text = (ROOT / "docs" / "performance.md").read_text()
    table = text.split("## Hosts", 1)[1].split("\n\n")[1]
    return [row.split("|")[1].strip() for row in table.splitlines()[2:]]


@pytest.mark.parametrize("name", HOST_PAGES)
def test_every_measurement_section_and_plot_names_its_host(name):
    """In performance.md and operations.md, figures sit under a ### heading that is a host of the Hosts table,
    so that another host's figures can sit beside them; every plot's caption starts with its host."""
    known = hosts()
    assert "Zen 3 host, AVX2+FMA only" in known
    text = (ROOT / "docs" / name).read_text()
    sections = re.findall(r"^### (.+)$", text, re.MULTILINE)
    assert sections and all(s in known for s in sections), f"{name}: ### headings {sections} must be hosts {known}"
    captions = re.findall(r"!\[([^\]]*)\]\(", text)
    unlabelled = [c for c in captions if not any(c.startswith(host) for host in known)]
    assert not unlabelled, f"{name}: plots whose caption does not start with its host: {unlabelled}"
