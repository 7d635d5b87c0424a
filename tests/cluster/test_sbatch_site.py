"""What real sites need in a batch script: account, QOS, constraint, memory, an
error file, module set-up before ``srun``, any other ``#SBATCH`` option, and the
seed guide's sbatch flags (``--nodes=2 --ntasks-per-node=8 --gres=gpu:2``).

The set-up tests run the script through bash with a fake ``srun`` on PATH that
records its argv and environment. No SLURM needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mirrorfit.cli import main
from mirrorfit.cluster.sbatch import SbatchOptions, TasksPerGpuError, build_script
from mirrorfit.cluster.sbatch_values import parse_gres, parse_sbatch_options

BASH = shutil.which("bash") or "bash"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

# records argv and three variables, NUL-separated, where FAKE_SRUN_LOG points
FAKE_SRUN = """#!/bin/bash
{ printf '%s\\0' "$@"; printf 'OMP=%s\\0' "$OMP_NUM_THREADS";
  printf 'FROM_PRELUDE=%s\\0' "${FROM_PRELUDE-unset}";
  printf 'FROM_SETUP=%s\\0' "${FROM_SETUP-unset}"; } > "$FAKE_SRUN_LOG"
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


def test_site_options_become_directives(script: Path) -> None:
    opts = SbatchOptions(
        str(script),
        nodes=2,
        gpus_per_node=4,
        gpu_type="a100",
        cpus_per_task=8,
        account="proj-42",
        qos="high",
        constraint="[rack1|rack2]&ib",
        mem="64G",
        error="logs/%x-%j.err",
        sbatch_options={"comment": "tensorflow", "exclusive": None, "exclude": "n[01-03]"},
        signal_seconds=0,
    )
    assert _directives(build_script(opts)) == [
        "--job-name=train",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--gres=gpu:a100:4",
        "--account=proj-42",
        "--qos=high",
        "--constraint=[rack1|rack2]&ib",
        "--mem=64G",
        "--output=%x-%j.out",
        "--error=logs/%x-%j.err",
        "--requeue",
        "--open-mode=append",
        "--comment=tensorflow",
        "--exclusive",
        "--exclude=n[01-03]",
    ]


def test_setup_comes_after_set_e_and_before_set_u_and_srun(script: Path, tmp_path: Path) -> None:
    prelude = tmp_path / "site.sh"
    prelude.write_text("#!/bin/bash\nmodule purge\nmodule load gcc/8.3.0 cuda/10.0\n")
    text = build_script(
        SbatchOptions(
            str(script),
            setup=("module load cuda/12.4 cudnn", "source ~/venv/bin/activate"),
            prelude=str(prelude),
            env={"A": "1"},
        )
    )
    body = text.split("# Written by `mirrorfit slurm`", 1)[1].splitlines()[1:]
    assert body[:9] == [
        "set -e",
        f"# --prelude {prelude}",
        "module purge",
        "module load gcc/8.3.0 cuda/10.0",
        "# --setup",
        "module load cuda/12.4 cudnn",
        "source ~/venv/bin/activate",
        "set -u",
        "export OMP_NUM_THREADS=1",
    ]
    assert body[9] == "export A=1" and body[10].startswith("srun ")
    assert "#!/bin/bash" not in "\n".join(body)


def _run_batch(batch_text: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    batch = tmp_path / "job.sbatch"
    batch.write_text(batch_text)
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "srun").write_text(FAKE_SRUN)
    (shim / "srun").chmod(0o755)
    log = tmp_path / "srun.log"
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SRUN_LOG": str(log),
    }
    env.pop("MF_NEVER_SET", None)
    proc = subprocess.run(
        [BASH, str(batch)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    return proc, log


@needs_bash
def test_setup_runs_in_the_job_shell(script: Path, tmp_path: Path) -> None:
    """Exports from the prelude and --setup reach srun; an unset variable in set-up
    (as module scripts read) is no error; --cpus-per-task reaches srun and OMP."""
    prelude = tmp_path / "site.sh"
    prelude.write_text("export FROM_PRELUDE=p\n")
    opts = SbatchOptions(
        str(script),
        cpus_per_task=4,
        prelude=str(prelude),
        setup=('echo "${MF_NEVER_SET}" > /dev/null', "export FROM_SETUP=\"$FROM_PRELUDE s\""),
    )
    proc, log = _run_batch(build_script(opts), tmp_path)
    assert proc.returncode == 0, proc.stderr
    recorded = log.read_text().split("\0")[:-1]
    assert recorded[:2] == ["--kill-on-bad-exit=1", "--cpus-per-task=4"]
    assert recorded[-3:] == ["OMP=4", "FROM_PRELUDE=p", "FROM_SETUP=p s"]


@needs_bash
def test_a_failing_setup_command_ends_the_job_before_srun(script: Path, tmp_path: Path) -> None:
    opts = SbatchOptions(str(script), setup=("module() { return 1; }", "module load nope/1.0"))
    proc, log = _run_batch(build_script(opts), tmp_path)
    assert proc.returncode != 0
    assert not log.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mem": "16GB"}, r"--mem '16GB' is not a SLURM memory size.*e\.g\. --mem 16G\."),
        ({"mem": "lots"}, r"--mem 'lots'.*e\.g\. --mem 64G\."),
        ({"mem": "4 G"}, r"--mem '4 G'.*--mem 4G\."),
        ({"constraint": "a100 & ib"}, r"--constraint 'a100 & ib' contains characters"),
        ({"constraint": 'a"b'}, r"--constraint 'a\"b'"),
        ({"constraint": "a#b"}, r"--constraint 'a#b'"),
        ({"constraint": "x\n#SBATCH --qos=top"}, r"--constraint 'x\\n#SBATCH"),
        ({"account": "$PROJECT"}, r"--account '\$PROJECT'.*does not expand"),
        ({"qos": "a b"}, r"--qos 'a b'"),
        ({"error": "err file"}, r"--error 'err file'"),
        ({"setup": ("module purge\nrm -rf ~",)}, r"--setup 'module purge\\nrm -rf ~' must be one"),
        ({"setup": ("  ",)}, r"--setup '  ' must be one non-empty"),
        ({"gpu_type": "a100"}, r"a GPU type \('a100'\) needs --gpus-per-node"),
        ({"prelude": "/no/such/site.sh"}, r"--prelude '/no/such/site.sh' does not exist"),
    ],
)
def test_invalid_site_options(script: Path, kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        SbatchOptions(str(script), **kwargs)


def test_prelude_with_sbatch_lines_is_refused(script: Path, tmp_path: Path) -> None:
    prelude = tmp_path / "old.sh"
    prelude.write_text("#!/bin/sh\n#SBATCH -p gpu\nmodule purge\n")
    with pytest.raises(ValueError, match=r"holds '#SBATCH -p gpu'.*--sbatch-option"):
        SbatchOptions(str(script), prelude=str(prelude))


def test_tasks_per_gpu_conflict_is_its_own_error(script: Path) -> None:
    with pytest.raises(TasksPerGpuError, match=r"--ntasks-per-node 8 conflicts with 2 GPUs"):
        SbatchOptions(str(script), gpus_per_node=2, ntasks_per_node=8)


def test_parse_sbatch_options() -> None:
    assert parse_sbatch_options(["comment=tf", "--exclusive", "mail-type=END,FAIL"]) == {
        "comment": "tf",
        "exclusive": None,
        "mail-type": "END,FAIL",
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["nodes=2"], r"mirrorfit writes --nodes itself; use --nodes instead"),
        (["gres=gpu:2"], r"use --gpus-per-node \(or --gres gpu:G\)"),
        (["mem=4G"], r"use --mem instead"),
        (["-p=gpu"], r"'-p' is not a long sbatch option name"),
        (["Comment=x"], r"'Comment' is not a long sbatch option name"),
        (["comment=a", "comment=b"], r"comment is given twice"),
        (["comment="], r"'comment=' has an empty value"),
        (["comment=a b"], r"--sbatch-option comment= 'a b' contains characters"),
        (["comment=$(id)"], r"contains characters"),
    ],
)
def test_bad_sbatch_options(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sbatch_options(items)


def test_parse_gres() -> None:
    assert parse_gres("gpu:2") == (2, None)
    assert parse_gres("gpu:v100:4") == (4, "v100")
    for bad in ("gpu", "nvme:1", "gpu:2:v100", "gpu:-1"):
        with pytest.raises(ValueError, match=r"gpu:G or gpu:TYPE:G"):
            parse_gres(bad)


def test_seed_flags_are_refused_with_the_corrected_line(
    script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed guide's `#SBATCH --gres=gpu:2 --nodes=2 --ntasks-per-node=8`."""
    argv = ["slurm", "--nodes=2", "--ntasks-per-node=8", "--gres=gpu:2", str(script), "-e", "1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "mirrorfit slurm: error: --ntasks-per-node 8 conflicts with 2 GPUs per node: "
        "mirrorfit runs one task per GPU, so the job has 2 tasks per node; drop "
        "--ntasks-per-node (use --cpus-per-task for data-loading cores). Write: "
        f"mirrorfit slurm --nodes=2 --gres=gpu:2 {script} -e 1\n"
    )
    # the corrected line works, and so do the seed's flags when they agree
    assert main(["slurm", "--nodes=2", "--gres=gpu:2", str(script), "-e", "1"]) == 0
    fixed = capsys.readouterr().out
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2\n" in fixed
    assert "#SBATCH --gres=gpu:2\n" in fixed
    assert main(["slurm", "--nodes=2", "--ntasks-per-node=2", "--gres=gpu:2", str(script)]) == 0
    assert capsys.readouterr().out.replace(" -e 1", "") == fixed.replace(" -e 1", "")


def test_short_flags_write_the_same_script(
    script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prelude = tmp_path / "site.sh"
    prelude.write_text("module purge\n")
    common = ["--setup", "module load cuda/12.4", "--prelude", str(prelude),
              "--sbatch-option", "comment=tensorflow", "--mem", "8G", "--gres", "gpu:2"]
    short = ["-N", "2", "-c", "4", "-t", "1:00:00", "-p", "gpu", "-J", "keras",
             "-o", "%x_%j.out", "-e", "%x_%j.err", "-A", "proj", "-q", "normal", "-C", "v100"]
    long = ["--nodes", "2", "--cpus-per-task", "4", "--time", "1:00:00", "--partition", "gpu",
            "--job-name", "keras", "--output", "%x_%j.out", "--error", "%x_%j.err",
            "--account", "proj", "--qos", "normal", "--constraint", "v100"]
    assert main(["slurm", *short, *common, str(script)]) == 0
    out_short = capsys.readouterr().out
    assert main(["slurm", *long, *common, str(script)]) == 0
    assert capsys.readouterr().out == out_short
    for line in ("--account=proj", "--qos=normal", "--constraint=v100", "--mem=8G",
                 "--error=%x_%j.err", "--comment=tensorflow", "--cpus-per-task=4"):
        assert f"#SBATCH {line}\n" in out_short
    assert "\nmodule purge\n# --setup\nmodule load cuda/12.4\nset -u\n" in out_short


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gres", "gpu:2", "--gpus-per-node", "4"], "asks for 2 GPUs per node but"),
        (["--gres", "nvme:1"], "gpu:G or gpu:TYPE:G"),
        (["--sbatch-option", "time=5"], "use --time instead"),
        (["--mem", "2GB"], "e.g. --mem 2G."),
        (["--setup", ""], "must be one non-empty"),
        # sbatch's job totals (argparse would have taken --ntasks for --ntasks-per-node)
        (["--nodes", "2", "--ntasks", "4"], "write --nodes 2 --ntasks-per-node 2."),
        (["-N", "2", "-n", "3"], "use --nodes N and --ntasks-per-node T"),
        (["--nodes", "2", "--gpus", "8"], "write --nodes 2 --gpus-per-node 4."),
        (["-G", "2"], "write --nodes 1 --gpus-per-node 2."),
    ],
)
def test_cli_site_errors_exit_2_with_one_line(
    script: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["slurm", *argv, str(script)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("mirrorfit slurm: error: ") and message in captured.err
    assert captured.err.count("\n") == 1


def test_gpu_jobs_without_cpus_per_task_get_a_note(
    script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["slurm", "--gpus-per-node", "2", str(script)]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --cpus-per-task=1\n" in captured.out
    assert captured.err == (
        "mirrorfit slurm: note: each GPU task gets 1 CPU core (SLURM's default), for its "
        "threads and its data loading; ask for more with --cpus-per-task, e.g. -c 8.\n"
    )
    for argv in (["--gpus-per-node", "2", "-c", "1"], ["--ntasks-per-node", "2"]):
        assert main(["slurm", *argv, str(script)]) == 0
        assert capsys.readouterr().err == ""
    assert main(["slurm", "--gpus-per-node", "2", "-c", "0", str(script)]) == 2
    assert "--cpus-per-task 0 must be >= 1" in capsys.readouterr().err
