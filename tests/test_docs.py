"""Every ```python block of README.md and docs/*.md runs, as a reader would run it.

Conventions (write them in the Markdown source, right before a block; blank
lines may separate a marker from its block):

- A page's blocks run in order in **one script, one process** (as in a
  notebook: a later block uses what an earlier one defined). A page that starts
  ``MirroredStrategy(devices=2)`` runs that script in 2 workers, like a reader's
  ``python page.py``: keep those pages few (each costs ~10 s here).
- ``<!-- doc-test: skip REASON -->``: the block is not run (seed code in
  TensorFlow, a data layout, a fragment of a larger script). The reason is
  required.
- ``<!-- doc-test: replace OLD => NEW -->`` (repeatable): the block runs with
  ``OLD`` replaced by ``NEW``, e.g. ``epochs=10 => epochs=1`` or a path on a
  cluster's shared disk by a local one. ``OLD`` must occur in the block.
- The script runs in a fresh temporary directory, one thread per process
  (``OMP_NUM_THREADS=1``: the machine is shared), with ``mnist.load_data`` and
  ``fashion_mnist.load_data`` cut to the first 2,000 training and 500 test
  images (``PRELUDE`` below). Nothing else is changed behind the reader's back:
  any other reduction is a visible ``replace`` marker in the page's source.

``test_markers_are_well_formed`` checks the markers without running anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.procs import REPO, clean_env, run_python

MARKER = re.compile(r"^<!--\s*doc-test:\s*(skip|replace)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\S*)\s*$")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

PRELUDE = '''\
import mirrorfit.datasets


def _cut(load):  # the doc test's only change: smaller MNIST / Fashion-MNIST
    def load_data(path=None):
        (x, y), (xt, yt) = load(path)
        return (x[:2000], y[:2000]), (xt[:500], yt[:500])
    return load_data


for _set in (mirrorfit.datasets.mnist, mirrorfit.datasets.fashion_mnist):
    _set.load_data = _cut(_set.load_data)
'''


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None = None
    replace: list[tuple[str, str]] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    def runnable_code(self) -> str:
        code = self.code
        for old, new in self.replace:
            assert old in code, f"{self.where}: 'replace {old} => {new}': no {old!r} in the block"
            code = code.replace(old, new)
        return code


def parse(page: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``page`` with their markers, and the problems found."""
    blocks, problems, pending = [], [], []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        text = lines[i]
        if m := MARKER.match(text):
            pending.append((i + 1, m.group(1), m.group(2)))
        elif m := FENCE.match(text):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                problems.append(f"{page.name}:{i + 1}: a code fence that never closes")
                break
            block = Block(page, i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n")
            problems += _attach(block, pending)
            pending = []
            blocks.append(block)
            i = end
        elif text.strip() and pending:
            problems.append(f"{page.name}:{pending[0][0]}: a doc-test marker not followed by "
                            "a code block")
            pending = []
        i += 1
    if pending:
        problems.append(f"{page.name}:{pending[0][0]}: a doc-test marker at the end of the page")
    return blocks, problems


def _attach(block: Block, markers: list[tuple[int, str, str]]) -> list[str]:
    problems = []
    for line, kind, arg in markers:
        if block.language != "python":
            problems.append(f"{block.page.name}:{line}: a doc-test marker before a "
                            f"```{block.language} block (only python blocks run)")
        elif kind == "skip":
            if not arg:
                problems.append(f"{block.page.name}:{line}: 'doc-test: skip' needs a reason")
            block.skip = arg
        elif " => " not in arg:
            problems.append(f"{block.page.name}:{line}: write 'doc-test: replace OLD => NEW'")
        else:
            old, new = arg.split(" => ", 1)
            block.replace.append((old, new))
    return problems


def page_script(page: Path) -> str | None:
    """The page's runnable blocks as one script (None: nothing to run)."""
    runnable = [b for b in parse(page)[0] if b.language == "python" and b.skip is None]
    if not runnable:
        return None
    parts = [PRELUDE]
    for block in runnable:
        parts.append(f"\n# ---- {block.where}\n{block.runnable_code()}")
    return "".join(parts)


def test_markers_are_well_formed() -> None:
    problems = []
    for page in PAGES:
        blocks, found = parse(page)
        problems += found
        for block in blocks:
            if block.language == "python" and block.skip is None:
                try:
                    compile(block.runnable_code(), block.where, "exec")
                except (SyntaxError, AssertionError) as err:
                    problems.append(f"{block.where}: {err}")
    assert not problems, "\n".join(problems)


RUN = [p for p in PAGES
       if any(b.language == "python" and b.skip is None for b in parse(p)[0])]


@pytest.mark.multiprocess
@pytest.mark.parametrize("page", RUN, ids=[str(p.relative_to(REPO)) for p in RUN])
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    script = tmp_path / (page.stem + ".py")
    script.write_text(page_script(page) or "")
    work = tmp_path / "work"
    work.mkdir()
    res = run_python(script, timeout=280, cwd=work, env=clean_env(OMP_NUM_THREADS="1"))
    assert res.returncode == 0, (f"{page.name}'s code failed (script: {script})\n"
                                 f"{res.stdout[-2000:]}\n{res.stderr[-4000:]}")


def test_parser_reports_bad_markers(tmp_path: Path) -> None:
    page = tmp_path / "probe.md"
    page.write_text(
        "<!-- doc-test: skip -->\n```python\nx = 1\n```\n"
        "<!-- doc-test: replace a -> b -->\n```python\na = 1\n```\n"
        "<!-- doc-test: skip prose follows -->\nSome prose.\n"
        "<!-- doc-test: replace 2 => 3 -->\n\n```python\ny = 2\n```\n"
        "<!-- doc-test: skip shell -->\n```sh\nls\n```\n")
    blocks, problems = parse(page)
    assert [b.line for b in blocks] == [2, 6, 13, 17]
    assert blocks[2].replace == [("2", "3")] and blocks[2].skip is None
    assert problems == [
        "probe.md:1: 'doc-test: skip' needs a reason",
        "probe.md:5: write 'doc-test: replace OLD => NEW'",
        "probe.md:9: a doc-test marker not followed by a code block",
        "probe.md:16: a doc-test marker before a ```sh block (only python blocks run)",
    ]
