"""The README and docs/ stay true: results pages are what their committed files produce, relative links, anchors and
named file paths exist, `make` targets and variables and `mbtb` options in commands exist, every page is reachable
from the README, and the README stays short and quotes the committed headlines."""
from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest

from scripts import results_page

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"
# Pages other branches are writing at the same time: links to them pass while they are missing. Remove after merging.

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`]+)`")
# A path in the repository named in prose or a command: it starts with a committed top-level directory or file.
REPO_PATH = re.compile(r"(?<![\w./<>-])((?:\.ci|bench|configs|distill|docs|mbtb|scripts|serve|ship|tests)/"
                       r"(?:[\w.*/-]|\{[\w,.-]*\})*"
                       r"|Makefile|pyproject\.toml|constraints\.txt|requirements(?:-\w+)?\.txt)(?![\w<])")
# `python -m <module>` -> the `mbtb` subcommand whose options it takes (mbtb/commands.py)
MODULE_COMMANDS = {"distill": "distill", "distill.cli": "distill", "distill.ablation": "ablation",
                   "bench.export": "export", "bench.timing": "bench", "bench.report": "render",
                   "bench.make_report": "report", "serve": "serve", "bench.ab": "gate"}
MAKE_ARGS = {"ARGS": ("distill", "ablation", "report"), "GATE_ARGS": ("gate",)}


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def rel(path: Path) -> str:
    return Path(os.path.relpath(path.resolve(), ROOT)).as_posix()


def prose(text: str) -> str:
    """The text outside fenced code blocks (where links and headings are what they look like)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.*)$", prose(path.read_text()), re.M)
    return {slug(h.replace("`", "")) for h in headings}


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{rel(path)}: link to missing {target}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{rel(path)}: no heading for #{anchor} in {rel(dest)}")
    return broken


def expand_braces(pattern: str) -> list[str]:
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def missing_paths(path: Path) -> list[str]:
    missing = []
    for named in set(REPO_PATH.findall(path.read_text())):
        named = named.rstrip(".")
        for candidate in expand_braces(named):
            found = any(ROOT.glob(candidate)) if "*" in candidate else (ROOT / candidate).exists()
            if not found:
                missing.append(f"{rel(path)}: names {candidate}, which does not exist")
    return missing


def reachable_from_readme() -> set[str]:
    seen, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if rel(page) in seen or not page.exists():
            continue
        seen.add(rel(page))
        for target in LINK.findall(prose(page.read_text())):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and not re.match(r"[a-z]+:", file_part):
                todo.append((page.parent / file_part).resolve())
    return seen


# --- commands ---------------------------------------------------------------------------------------------------
def command_lines(text: str) -> list[str]:
    """Every line of a fenced code block, and every inline code span, with shell line continuations joined."""
    blocks = [b.split("\n", 1)[1].rsplit("```", 1)[0] for b in FENCE.findall(text)]
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return lines + [" ".join(span.split()) for span in INLINE_CODE.findall(prose(text))]


def commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, leading `VAR=value` and `time` dropped; [] when it is not shell.
    Usage notation is read as meant: `[VAR=x]` is optional, `<name>` a placeholder."""
    line = re.sub(r"\[([A-Z_]+=[^\]]*)\]", r"\1", re.sub(r"^\s*(\$|- run:)\s+", "", line))
    lexer = shlex.shlex(re.sub(r"<[^<>]+>", "PLACEHOLDER", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    separators = ("&&", "||", ";", "|", "(", ")")
    split = [list(g) for sep, g in itertools.groupby(tokens, lambda t: t in separators) if not sep]
    return [list(itertools.dropwhile(lambda t: re.match(r"[A-Z_]+=", t) or t == "time", c)) for c in split]


@functools.lru_cache(maxsize=None)
def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = {t for line in re.findall(r"^([\w][\w .-]*?)\s*:(?!=)", text, re.M) for t in line.split()}
    defined = set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*[?:+]?=", text, re.M))
    variables = defined | set(re.findall(r"\$\(([A-Z_]+)\)", text))
    return targets, variables


@functools.lru_cache(maxsize=None)
def options_of(subcommand: str) -> frozenset[str]:
    from mbtb import commands as mbtb
    if subcommand not in mbtb.COMMANDS:
        return frozenset()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        mbtb.main([subcommand, "--help"])
    return frozenset(re.findall(r"(?<![\w-])--[a-z][\w-]*", out.getvalue()))


def unknown_options(subcommand: str, args: list[str]) -> list[str]:
    flags = [a.split("=")[0] for a in itertools.takewhile(lambda a: a != "--", args) if a.startswith("--")]
    known = options_of(subcommand)
    if not known:
        return [f"mbtb has no command {subcommand!r}"]
    return [f"`mbtb {subcommand}` has no option {f}" for f in flags if f not in known]


def command_problems(tokens: list[str]) -> list[str]:
    if not tokens:
        return []
    if tokens[0] == "make":
        targets, variables = makefile()
        problems = []
        for token in tokens[1:]:
            name, eq, value = token.partition("=")
            if eq and name not in variables:
                problems.append(f"the Makefile has no variable {name}")
            elif not eq and not token.startswith("-") and token not in targets:
                problems.append(f"the Makefile has no target {token}")
            for sub in MAKE_ARGS.get(name, ()) if eq else ():
                problems += unknown_options(sub, shlex.split(value)) if sub in tokens[1:] else []
        return problems
    if Path(tokens[0]).name == "mbtb" and len(tokens) > 1 and re.fullmatch(r"[a-z]+", tokens[1]):
        return unknown_options(tokens[1], tokens[2:])
    if "-m" in tokens[:-1] and tokens[tokens.index("-m") + 1] in MODULE_COMMANDS:
        i = tokens.index("-m") + 1
        return unknown_options(MODULE_COMMANDS[tokens[i]], tokens[i + 1:])
    return []


# --- the tests --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("directory", results_page.result_directories(RESULTS), ids=lambda d: d.name)
def test_each_committed_results_page_is_what_its_files_produce(directory):
    page = results_page.page_path(directory)
    assert page.exists(), f"{rel(page)} is missing: run `make results-docs PROFILE={directory.name}`"
    assert page.read_text() == results_page.writer(directory)(directory), \
        f"{rel(page)} differs from its files: run `make results-docs PROFILE={directory.name}`"


def test_the_check_mode_finds_a_stale_page_and_writing_it_fixes_it(tmp_path):
    shutil.copytree(RESULTS / "gate", tmp_path / "gate")
    (tmp_path / "gate.md").write_text("a page pasted by hand\n")
    assert results_page.main(["--check", str(tmp_path / "gate")]) == 1
    assert results_page.main([str(tmp_path / "gate")]) == 0
    assert results_page.main(["--check", str(tmp_path / "gate")]) == 0
    assert "| unchanged " in (tmp_path / "gate.md").read_text()


def test_the_profile_pages_show_every_table_the_targets_and_the_machine():
    text = (RESULTS / "default.md").read_text()
    summary = json.loads((RESULTS / "default" / "summary.json").read_text())
    for part in ("## Targets", "| met?", "## Stage times", "`timings-second-run.json`", "## Ablation",
                 "## Accuracy of the spine", summary["headline"][0],
                 "CPU flags " + " ".join(summary["machine"]["cpu_flags"])):
        assert part in text


@pytest.mark.parametrize("path", markdown_files(), ids=rel)
def test_relative_links_and_anchors_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=rel)
def test_every_file_path_named_exists(path):
    assert missing_paths(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=rel)
def test_every_make_target_variable_and_mbtb_option_in_a_command_exists(path):
    problems = [f"{line.strip()!r}: {p}" for line in command_lines(path.read_text())
                for tokens in commands(line) for p in command_problems(tokens)]
    assert problems == []


def test_every_docs_page_is_reachable_from_the_readme():
    pages = {rel(p) for p in markdown_files()}
    assert pages - reachable_from_readme() == set()


def test_the_readme_is_short_and_quotes_the_committed_headlines():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    quoted = " ".join(" ".join(line[2:] for line in text.splitlines() if line.startswith("> ")).split())
    for profile in ("default", "full"):
        headline = json.loads((RESULTS / profile / "summary.json").read_text())["headline"][0]
        assert " ".join(headline.split()) in quoted, f"the README's {profile} headline is not summary.json's"


QUOTED = re.compile(r"<!-- quoted from (docs/results/[\w.-]+\.md) -->\n((?:\|.*\n)+)")


def test_tables_the_readme_quotes_are_copied_from_the_results_pages():
    """A table of figures in the README follows `<!-- quoted from docs/results/<page>.md -->` and stands in that
    page line for line: written from committed result files, never typed."""
    quoted = QUOTED.findall(README.read_text())
    assert len(quoted) >= 2, "the README quotes the verdict and the packages' figures"
    for page, table in quoted:
        assert table in (ROOT / page).read_text(), f"the README's table from {page} differs from it"


@pytest.mark.parametrize("text, problem", [
    ("[a](no-such-page.md)", "link to missing no-such-page.md"),
    ("[a](#no-such-heading)\n\n# A heading", "no heading for #no-such-heading"),
    ("see `scripts/no_such_script.py`", "names scripts/no_such_script.py"),
    ("```bash\nmake no-such-target PROFILE=smoke\n```", "no target no-such-target"),
    ("`make report NO_SUCH_VAR=1`", "no variable NO_SUCH_VAR"),
    ("`make report ARGS='--no-such-flag'`", "`mbtb report` has no option --no-such-flag"),
    ("```\n.venv/bin/mbtb serve --no-such-flag\n```", "`mbtb serve` has no option --no-such-flag"),
])
def test_the_checks_catch_what_they_are_for(tmp_path, text, problem):
    page = tmp_path / "page.md"
    page.write_text(text + "\n")
    found = broken_links(page) + missing_paths(page) + [
        p for line in command_lines(text) for tokens in commands(line) for p in command_problems(tokens)]
    assert any(problem in f for f in found), found
