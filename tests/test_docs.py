"""The README and the pages under docs/ stay true to the repository: their relative links (and anchors)
resolve, the README stays a short front door with its set-up commands as CI runs them, and every command
its table names is one the CLI has."""
import contextlib
import io
import re
from pathlib import Path

import pytest

from correctsweep.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *PAGES]

SETUP = ["    pip install -e . && correctsweep sweep sweeps/default.yaml",
         "    pip install -e '.[test]' && python -m pytest -q"]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The file's text without its fenced code blocks (a `# file.py` line in one is no heading)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.M)}


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc):
        file, _, fragment = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target} (no heading #{fragment})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_every_page_is_linked_from_the_readme_and_the_index():
    index = ROOT / "docs" / "README.md"
    for page in [p for p in PAGES if p != index]:
        for doc in (README, index):
            targets = {(doc.parent / t.partition("#")[0]).resolve() for t in links(doc)}
            assert page in targets, f"{doc.relative_to(ROOT)} does not link {page.relative_to(ROOT)}"


def test_every_page_has_a_title_and_a_purpose():
    for page in PAGES:
        first, blank, purpose = page.read_text(encoding="utf-8").split("\n")[:3]
        assert first.startswith("# ") and not blank and purpose.strip(), f"{page.name}: a title, then a line"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail to a page under docs/"


def test_readme_keeps_the_setup_commands_exactly():
    lines = README.read_text(encoding="utf-8").splitlines()
    for command in SETUP:
        assert command in lines, f"README.md lost the set-up command {command.strip()!r}"


def command_table() -> list[tuple[str, list[str]]]:
    """(sub-command, its --options) for each row of the README's command table."""
    section = README.read_text(encoding="utf-8").split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `correctsweep ([^`]*)` \|", section, flags=re.M)
    assert rows, "README.md's Commands section has no command table"
    return [(row.split()[0], re.findall(r"--[a-z][a-z-]*", row)) for row in rows]


def cli_help(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), \
            pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    return stop.value.code, out.getvalue()


@pytest.mark.parametrize("command,options", command_table(), ids=lambda x: x if isinstance(x, str) else "")
def test_readme_commands_exist(command, options):
    code, text = cli_help(command)
    assert code == 0, f"README.md names `correctsweep {command}`, which the CLI does not have"
    missing = [o for o in options if not re.search(rf"{o}\b", text)]
    assert not missing, f"`correctsweep {command}` has no option {', '.join(missing)}"


def test_a_made_up_command_is_caught():
    assert cli_help("nosuchcommand")[0] != 0


def test_the_spec_reference_is_generated_from_the_code_s_docstrings():
    from correctsweep.config.reference import markdown

    page = ROOT / "docs" / "spec-reference.md"
    assert page.read_text(encoding="utf-8") == markdown(), \
        "stale: python -m correctsweep.config.reference > docs/spec-reference.md"
    for key in ("`corrector.xgboost.max_rounds`", "`data.synthetic.n_images`", "`base_net.paper.heads`",
                "`detectors.knn.k`", "`report.level`"):
        assert key in markdown()
