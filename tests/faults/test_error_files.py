"""A worker's error file is whole or absent, and the launcher never crashes on one.

The launcher SIGKILLs the other workers the moment one fails; a worker killed
half-way through writing its own ``error.json`` used to leave a partial file,
which torch elastic's agent parsed and died on (``json.decoder.JSONDecodeError``,
two tracebacks, instead of mirrorfit's one-line report; 1 of 29 trials of a
collective mismatch). Now the worker writes a temporary file, fsyncs and renames
it, and the launcher sets aside an error file that is not whole JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import clean_env, write_script

#: the fault: the writer is killed between opening the file and finishing the write
KILLED_MID_WRITE = r'''
import json, os, signal, sys
from mirrorfit.cluster import errors


def dump(obj, fp):
    fp.write(json.dumps(obj)[:20])
    fp.flush()
    os.kill(os.getpid(), signal.SIGKILL)


errors.json.dump = dump
errors._write_error_file(RuntimeError("boom"), "Traceback ...", 0)
'''

#: N launches of 2 cheap workers (no torch): rank 0 leaves a partial error file
#: behind and exits 1 (as a writer killed mid-write would), rank 1 waits
PARTIAL_FILES = r'''
import sys
from mirrorfit.cluster.launcher import LaunchSpec, launch

WORKER = """
import os, time
if os.environ["RANK"] == "0":
    with open(os.environ["TORCHELASTIC_ERROR_FILE"], "w") as fp:
        fp.write('{"message": {"message": "RuntimeError: bo')
    os._exit(1)
time.sleep(30)
"""
codes = [launch(LaunchSpec(2), ["-c", WORKER]) for _ in range(int(sys.argv[1]))]
print("CODES", codes, flush=True)
'''
TRIALS = 8


def test_a_writer_killed_mid_write_leaves_no_partial_error_file(tmp_path: Path) -> None:
    target = tmp_path / "error.json"
    script = write_script(tmp_path, KILLED_MID_WRITE)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env=clean_env(TORCHELASTIC_ERROR_FILE=str(target)))
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not target.exists()  # before: 20 bytes of JSON that torch's reader choked on
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("error.json")]
    assert all(".tmp-" in name for name in leftovers), leftovers


@pytest.mark.multiprocess
def test_the_launcher_reads_a_partial_error_file_as_no_details(tmp_path: Path) -> None:
    script = write_script(tmp_path, PARTIAL_FILES)
    proc = subprocess.run([sys.executable, str(script), str(TRIALS)], capture_output=True,
                          text=True, timeout=240, env=clean_env())
    err = proc.stderr
    assert proc.returncode == 0, err[-3000:]
    assert f"CODES {[1] * TRIALS}" in proc.stdout, (proc.stdout, err[-3000:])
    assert "JSONDecodeError" not in err and "Traceback" not in err, err[-3000:]
    report = ("mirrorfit: worker rank 0 exited with code 1 without raising a Python exception "
              "(os._exit, sys.exit from native code, or a crash).\n(the other worker was stopped)")
    assert err.count(report) == TRIALS, err[-3000:]


def test_error_file_json_is_unchanged(tmp_path: Path) -> None:
    from mirrorfit.cluster.errors import write_json_atomically

    path = tmp_path / "e.json"
    write_json_atomically(str(path), {"message": {"message": "x"}})
    assert json.loads(path.read_text()) == {"message": {"message": "x"}}
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]
