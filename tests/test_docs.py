"""The README stays a front page and the manual in docs/ stays connected to it and to the code:

- the README has at most 300 lines;
- every relative link in README.md and docs/*.md reaches an existing file, and its #anchor (if any)
  a heading of that file;
- every entry point tools/*.py is named (as ``tools/NAME.py``) in the README or a docs page;
- the README's test command is the one .ci/run runs, and a Makefile target;
- the README's headline numbers are the numbers of the page each row links to.
"""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
MAX_README_LINES = 300
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _pages():
    docs = sorted(os.path.join(DOCS, n) for n in os.listdir(DOCS) if n.endswith(".md")) if os.path.isdir(DOCS) else []
    return [README] + docs


def _prose_lines(text: str):
    """The lines outside fenced code blocks and indented code blocks (4 spaces after a blank line)."""
    fenced, in_code, blank = False, False, True
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        in_code = line.startswith("    ") and (blank or in_code)
        blank = not line.strip()
        if not (fenced or in_code):
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces -> '-'."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: str) -> set:
    found, seen = set(), {}
    for line in _prose_lines(_read(path)):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            found.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return found


def relative_links(path: str):
    """``(line text, target)`` for every link of ``path`` that is not a URL."""
    for line in _prose_lines(_read(path)):
        for _, target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            yield line, target


def test_readme_is_short():
    n = len(_read(README).splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move the manual to docs/"


def test_docs_pages_exist():
    assert len(_pages()) > 1, "no docs/*.md pages"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    broken = []
    for _line, target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), file_part)) if file_part else page
        if not os.path.exists(dest):
            broken.append(f"{target}: no file {os.path.relpath(dest, ROOT)}")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {os.path.relpath(dest, ROOT)}")
    assert not broken, f"{os.path.relpath(page, ROOT)}: broken links:\n" + "\n".join(broken)


def test_every_tool_is_documented():
    text = "\n".join(_read(p) for p in _pages())
    tools = sorted(n for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py") and n != "__init__.py")
    assert tools
    missing = [n for n in tools if f"tools/{n}" not in text]
    assert not missing, f"entry points named nowhere in README.md or docs/: {missing}"


def readme_test_command() -> str:
    """The command of the README's code line that runs the test suite (``make test  # ...``)."""
    fenced, found = False, []
    for line in _read(README).splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced and re.match(r"^\S+ test\b", line):
            found.append(line.split("#", 1)[0].strip())
    assert len(found) == 1, f"expected one test command in the README's code blocks, found {found}"
    return found[0]


def test_ci_runs_the_readme_test_command():
    command = readme_test_command()
    ci = [
        line.strip()
        for line in _read(os.path.join(ROOT, ".ci", "run")).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == command, f".ci/run runs {ci[-1]!r}, the README says {command!r}"
    assert command.startswith("make "), command
    target = command.split()[1]
    assert re.search(rf"^{re.escape(target)}:", _read(os.path.join(ROOT, "Makefile")), re.M), (
        f"no Makefile target {target!r}"
    )


def headline_rows():
    """The rows of the README's table under '## Headline numbers': ``(row, linked page)``."""
    text = _read(README)
    m = re.search(r"^## Headline numbers\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md has no '## Headline numbers' section"
    rows = [r for r in m.group(1).splitlines() if r.startswith("|") and not re.match(r"^\|[-:| ]+\|$", r)][1:]
    assert rows, "no table rows under '## Headline numbers'"
    out = []
    for row in rows:
        links = [t for _, t in LINK.findall(row) if t.split("#")[0].endswith(".md")]
        assert links, f"headline row links to no page: {row}"
        out.append((row, os.path.join(ROOT, links[-1].split("#")[0])))
    return out


def test_headline_numbers_match_their_page():
    """Each figure lives on one page with its date and machine; the README only quotes it."""
    for row, page in headline_rows():
        quoted = re.sub(r"\]\([^)]*\)", "]", row)  # not the numbers of link targets
        source = _read(page)
        missing = [n for n in re.findall(r"\d+(?:\.\d+)?", quoted) if n not in source]
        assert not missing, f"{os.path.relpath(page, ROOT)} does not hold {missing} quoted by the README: {row}"
