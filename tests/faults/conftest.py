"""Fault tests: every test that runs a job adds a row to a session-wide table of
measured times (fault -> every worker gone), printed at the end of the run.

Set ``MIRRORFIT_FAULT_TABLE=path.md`` to also write the table as Markdown (what
``docs/faults.md`` quotes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from tests.faults.helpers import Outcome


@dataclass
class FaultTable:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, fault: str, out: Outcome, seen: str) -> None:
        secs = out.seconds_to_gone
        self.rows.append((fault, seen, f"{out.result.returncode}",
                          "-" if secs is None else f"{secs:.1f}"))

    def markdown(self) -> str:
        head = ["| fault | what the user sees | exit | s to all gone |", "|---|---|---|---|"]
        body = [f"| {f} | {s.replace('|', '/')} | {c} | {t} |" for f, s, c, t in self.rows]
        return "\n".join(head + body) + "\n"


_TABLE = FaultTable()


@pytest.fixture(scope="session")
def fault_table() -> FaultTable:
    return _TABLE


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TABLE.rows:
        return
    terminalreporter.section("faults: measured seconds from the fault to every worker gone")
    width = max(len(r[0]) for r in _TABLE.rows)
    for fault, seen, code, secs in _TABLE.rows:
        terminalreporter.write_line(f"{fault:<{width}}  exit {code:>3}  {secs:>5} s  {seen[:110]}")
    path = os.environ.get("MIRRORFIT_FAULT_TABLE")
    if path:
        with open(path, "w") as fp:
            fp.write(_TABLE.markdown())
