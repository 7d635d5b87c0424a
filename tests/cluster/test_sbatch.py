"""Batch-script writing, validation, quoting and the `mirrorfit slurm` command.

The quoting tests run the produced script through ``bash -n`` and through bash
with a fake ``srun`` on PATH that writes its argv and environment, so a hostile
argument has to arrive verbatim and run nothing. No SLURM needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mirrorfit.cli import main
from mirrorfit.cluster.sbatch import (
    SbatchOptions,
    SubmitError,
    build_script,
    parse_env,
    parse_job_id,
    parse_time_limit,
    submit,
)

BASH = shutil.which("bash") or "bash"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

HOSTILE = [
    "'; rm -rf ~ #",
    "$(touch {pwned})",
    "`touch {pwned}`",
    "; touch {pwned}",
    'a "b" \\c',
    "line1\nline2",
    "*",
    "$HOME",
    "",
    "--lr=0.1",
]

# records argv and two variables, NUL-separated, where FAKE_SRUN_LOG points
FAKE_SRUN = """#!/bin/bash
{ printf '%s\\0' "$@"; printf 'OMP=%s\\0' "$OMP_NUM_THREADS"; printf 'EXTRA=%s\\0' "$EXTRA"; } \\
    > "$FAKE_SRUN_LOG"
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text("print('hi')\n")
    return path


def _directives(text: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH ")
    ]


def test_gpu_job_has_one_task_per_gpu(script: Path) -> None:
    text = build_script(
        SbatchOptions(
            str(script),
            nodes=2,
            gpus_per_node=4,
            cpus_per_task=8,
            time="1-12",
            partition="gpu",
            job_name="big",
            output="logs/%x-%j.out",
            signal_seconds=300,
            gpu=True,
        )
    )
    assert text.startswith("#!/bin/bash\n")
    assert _directives(text) == [
        "--job-name=big",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--gres=gpu:4",
        "--time=1-12",
        "--partition=gpu",
        "--output=logs/%x-%j.out",
        "--requeue",
        "--open-mode=append",
        "--signal=USR1@300",
    ]
    assert "export OMP_NUM_THREADS=8\n" in text
    last = text.splitlines()[-1]
    assert last.startswith("srun --kill-on-bad-exit=1 --cpus-per-task=8 ")
    assert last.endswith(f"{sys.executable} {script.resolve()}")


def test_cpu_job_defaults(script: Path) -> None:
    opts = SbatchOptions(str(script), ntasks_per_node=3, signal_seconds=0)
    text = build_script(opts)
    assert _directives(text) == [
        "--job-name=train",
        "--nodes=1",
        "--ntasks-per-node=3",
        "--cpus-per-task=1",
        "--output=%x-%j.out",
        "--requeue",
        "--open-mode=append",
    ]
    assert opts.tasks_per_node == 3
    assert SbatchOptions(str(script)).tasks_per_node == 1


def test_unsafe_script_name_gets_a_default_job_name(tmp_path: Path) -> None:
    path = tmp_path / "my train.py"
    path.write_text("")
    assert SbatchOptions(str(path)).resolved_job_name == "mirrorfit"


@needs_bash
def test_script_is_valid_bash(script: Path) -> None:
    opts = SbatchOptions(str(script), script_args=tuple(HOSTILE), env={"A": "x'y\nz"})
    subprocess.run([BASH, "-n"], input=build_script(opts), text=True, check=True)


@needs_bash
def test_hostile_values_arrive_verbatim_and_run_nothing(script: Path, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    args = tuple(a.format(pwned=pwned) for a in HOSTILE)
    extra = f"$(touch {pwned}) `touch {pwned}` '; touch {pwned}; '"
    batch = tmp_path / "job.sbatch"
    batch.write_text(
        build_script(
            SbatchOptions(
                str(script),
                script_args=args,
                cpus_per_task=2,
                env={"EXTRA": extra},
            )
        )
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "srun").write_text(FAKE_SRUN)
    (shim / "srun").chmod(0o755)
    log = tmp_path / "srun.log"
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SRUN_LOG": str(log),
    }
    subprocess.run([BASH, str(batch)], env=env, cwd=tmp_path, check=True, timeout=30)

    recorded = log.read_text().split("\0")[:-1]
    assert recorded[:2] == ["--kill-on-bad-exit=1", "--cpus-per-task=2"]
    assert recorded[2:4] == [sys.executable, str(script.resolve())]
    assert recorded[4:-2] == list(args)
    assert recorded[-2:] == ["OMP=2", f"EXTRA={extra}"]
    assert not pwned.exists()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 300),
        ("90", 5400),
        ("5:30", 330),
        ("01:00:00", 3600),
        ("36:00:00", 129600),
        ("2-3", 183600),
        ("2-3:30", 185400),
        ("2-03:30:15", 185415),
        ("00:00:30", 30),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_time_limits(text: str, seconds: int | None) -> None:
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1:2:3:4",
        "-5",
        "1-",
        "1-2-3",
        "1:75:00",
        "5:60",
        "2-24",
        "2-1:60",
        "0",
        "00:00",
        "1.5",
        "²",
        "1 :00",
    ],
)
def test_bad_time_limits(text: str) -> None:
    with pytest.raises(ValueError, match=r"--time .* not a valid SLURM time limit") as info:
        parse_time_limit(text)
    assert repr(text) in str(info.value) and "HH:MM:SS" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 0}, r"--nodes 0 must be >= 1"),
        ({"ntasks_per_node": 0}, r"--ntasks-per-node 0 must be >= 1"),
        ({"cpus_per_task": 0}, r"--cpus-per-task 0 must be >= 1"),
        ({"gpus_per_node": -1}, r"--gpus-per-node -1 must be >= 0"),
        ({"gpu": True}, r"--gpu asks for GPUs but --gpus-per-node is 0"),
        ({"gpus_per_node": 4, "ntasks_per_node": 2}, r"--ntasks-per-node 2 conflicts"),
        ({"time": "1:2:3:4"}, r"--time '1:2:3:4'"),
        ({"time": "2", "signal_seconds": 120}, r"--signal-seconds 120 is not shorter"),
        ({"signal_seconds": -1}, r"--signal-seconds -1 must be in 0..65535"),
        ({"signal_seconds": 70000}, r"--signal-seconds 70000"),
        ({"job_name": "a\nrm -rf ~"}, r"--job-name 'a\\nrm -rf ~' contains characters"),
        ({"job_name": "a b"}, r"--job-name 'a b'"),
        ({"partition": "p;x"}, r"--partition 'p;x'"),
        ({"output": "$HOME/x.out"}, r"--output '\$HOME/x.out'"),
        ({"output": "x.out\n"}, r"--output 'x.out\\n'"),
        ({"env": {"1A": "x"}}, r"--env name '1A' is not a valid"),
        ({"env": {"A\n": "x"}}, r"--env name 'A\\n'"),
    ],
)
def test_invalid_options(script: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SbatchOptions(str(script), **kwargs)


def test_missing_script(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"script '.*nope.py' does not exist"):
        SbatchOptions(str(tmp_path / "nope.py"))


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match=r"--env 'A' has no '='"):
        parse_env(["A"])
    with pytest.raises(ValueError, match=r"--env name 'A-B'"):
        parse_env(["A-B=1"])


def test_parse_job_id() -> None:
    assert parse_job_id("Submitted batch job 4242\n") == 4242
    with pytest.raises(SubmitError, match="printed 'oops'"):
        parse_job_id("oops")


def _fake_sbatch(tmp_path: Path, body: str) -> str:
    path = tmp_path / "sbatch"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


@needs_bash
def test_submit_writes_and_parses(tmp_path: Path) -> None:
    sbatch = _fake_sbatch(tmp_path, 'echo "Submitted batch job 77"')
    assert submit("#!/bin/bash\n", tmp_path / "job.sbatch", sbatch=sbatch) == 77
    assert (tmp_path / "job.sbatch").read_text() == "#!/bin/bash\n"
    failing = _fake_sbatch(tmp_path, 'echo "sbatch: error: invalid partition" >&2; exit 1')
    with pytest.raises(SubmitError, match=r"exit 1.*invalid partition"):
        submit("", tmp_path / "job.sbatch", sbatch=failing)
    with pytest.raises(FileNotFoundError, match="not found on PATH"):
        submit("", tmp_path / "job.sbatch", sbatch=str(tmp_path / "no-sbatch"))


def test_cli_prints_the_script(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["slurm", "--ntasks-per-node", "2", "--env", "A=1", str(script), "--lr", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "#SBATCH --ntasks-per-node=2\n" in out and "export A=1\n" in out
    assert out.rstrip().endswith(f"{script.resolve()} --lr 1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpu"], "--gpu asks for GPUs"),
        (["--time", "7:99"], "--time '7:99'"),
        (["--env", "NOEQUALS"], "--env 'NOEQUALS' has no '='"),
        (["--nodes", "0"], "--nodes 0"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    script: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["slurm", *argv, str(script)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mirrorfit slurm: error: ") and message in captured.err
    assert captured.err.count("\n") == 1


def test_cli_missing_script_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slurm", "/no/such/train.py"]) == 2
    assert "does not exist" in capsys.readouterr().err


@needs_bash
def test_cli_submit(
    script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fake_sbatch(tmp_path, 'cp "$1" "$1.seen"; echo "Submitted batch job 9"')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "out.sbatch"
    assert main(["slurm", "--submit", "--script-file", str(target), str(script)]) == 0
    assert capsys.readouterr().out == "9\n"
    assert Path(f"{target}.seen").read_text().startswith("#!/bin/bash\n#SBATCH")

    _fake_sbatch(tmp_path, "echo 'sbatch: error: Batch job submission failed' >&2; exit 1")
    assert main(["slurm", "--submit", "--script-file", str(target), str(script)]) == 2
    assert "submission failed" in capsys.readouterr().err
