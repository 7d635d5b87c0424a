"""cluster.preemption in one process: the handlers, the requeue decision with a
fake ``scontrol``, the check interval, and fit stopping at an agreed step with
a backup that resumes to an uninterrupted run's weights. (~3 s)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback
from mirrorfit.cluster import preemption
from mirrorfit.cluster.preemption import Preempted, check_interval, requeue_job
from mirrorfit.strategies.strategy import Strategy


@pytest.fixture(autouse=True)
def _handlers():
    """Each test starts without handlers or a recorded signal and leaves none behind."""
    preemption.uninstall()
    yield
    preemption.uninstall()


# --- handlers -------------------------------------------------------------------------------
def test_usr1_is_recorded_and_does_not_end_the_process() -> None:
    assert preemption.install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert preemption.requested() == "SIGUSR1"
    preemption.clear()
    assert preemption.requested() is None


def test_sigterm_is_recorded_inside_fit_only() -> None:
    with preemption.watch():
        os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.requested() == "SIGTERM"


def test_sigterm_outside_fit_ends_the_process_as_before() -> None:
    code = ("from mirrorfit.cluster import preemption; import os, signal, time\n"
            "preemption.install(); os.kill(os.getpid(), signal.SIGTERM); time.sleep(10)\n"
            "print('still alive')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stdout, proc.stderr)
    assert "still alive" not in proc.stdout


_SIGINT_HANDLER = ("from mirrorfit.cluster import preemption; import signal\n"
                   "preemption.install()\n"
                   "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")


def _started_with_sigint(disposition: signal.Handlers, *args: str) -> str:
    """The child's stdout, the child started with SIGINT at ``disposition`` (whatever
    this test process inherited: a shell's background job starts with it ignored)."""
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_ctrl_c_is_taken_over_in_a_script_but_stays_keyboardinterrupt_in_a_repl(
        tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SIGINT_HANDLER)
    # fit backs up on Ctrl-C in a script; interactive, Ctrl-C stops at once
    assert _started_with_sigint(signal.SIG_DFL, str(script)) == "False"
    assert _started_with_sigint(signal.SIG_DFL, "-c", _SIGINT_HANDLER) == "True"


def test_an_ignored_ctrl_c_stays_ignored(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(_SIGINT_HANDLER.replace("is signal.default_int_handler",
                                              "== signal.SIG_IGN"))
    assert _started_with_sigint(signal.SIG_IGN, str(script)) == "True"


def test_uninstall_restores_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    preemption.install()
    assert signal.getsignal(signal.SIGUSR1) is not before
    preemption.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is before


# --- requeue ---------------------------------------------------------------------------------
def _fake_scontrol(tmp_path: Path, state: str, reason: str = "None",
                   requeue_exit: int = 0) -> tuple[str, Path]:
    log = tmp_path / "calls"
    script = tmp_path / "scontrol"
    line = f"JobId=$4 JobName=x JobState={state} Reason={reason} Dependency=(null)"
    script.write_text(
        "#!/bin/bash\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$1" = show ]; then echo "{line}"; exit; fi\n'
        f'echo "scontrol: error: requeue refused" >&2; exit {requeue_exit}\n'
    )
    script.chmod(0o755)
    return str(script), log


def test_requeue_outside_slurm_does_nothing() -> None:
    done, note = requeue_job({})
    assert not done and "not a SLURM job" in note


def test_requeue_can_be_turned_off() -> None:
    done, note = requeue_job({"SLURM_JOB_ID": "42", "MIRRORFIT_REQUEUE": "0"})
    assert not done and "MIRRORFIT_REQUEUE=0" in note


@pytest.mark.parametrize(("state", "reason"), [("RUNNING", "None"),
                                               ("COMPLETING", "TimeLimit")])
def test_a_running_job_or_one_at_its_time_limit_is_requeued(tmp_path: Path, state: str,
                                                            reason: str) -> None:
    scontrol, log = _fake_scontrol(tmp_path, state, reason)
    assert requeue_job({"SLURM_JOB_ID": "42"}, scontrol) == (True, "requeued SLURM job 42")
    assert log.read_text().splitlines() == ["show job -o 42", "requeue 42"]


def test_an_array_task_requeues_itself_only(tmp_path: Path) -> None:
    scontrol, log = _fake_scontrol(tmp_path, "RUNNING")
    env = {"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}
    assert requeue_job(env, scontrol) == (True, "requeued SLURM job 40_3")
    assert log.read_text().splitlines() == ["show job -o 40_3", "requeue 40_3"]


@pytest.mark.parametrize(("state", "words"), [("COMPLETING", "being cancelled"),
                                              ("PENDING", "already requeued"),
                                              ("REQUEUED", "already requeued")])
def test_a_cancelled_or_already_requeued_job_is_left_alone(tmp_path: Path, state: str,
                                                           words: str) -> None:
    scontrol, log = _fake_scontrol(tmp_path, state)
    done, note = requeue_job({"SLURM_JOB_ID": "42"}, scontrol)
    assert not done and f"state {state}" in note and words in note
    assert log.read_text().splitlines() == ["show job -o 42"]


def test_a_failing_scontrol_is_reported_not_raised(tmp_path: Path) -> None:
    scontrol, _ = _fake_scontrol(tmp_path, "RUNNING", requeue_exit=1)
    done, note = requeue_job({"SLURM_JOB_ID": "42"}, scontrol)
    assert not done and "requeue refused" in note and "exit 1" in note
    done, note = requeue_job({"SLURM_JOB_ID": "42"}, str(tmp_path / "no-such-scontrol"))
    assert not done and "could not requeue job 42" in note


# --- check interval ------------------------------------------------------------------------
def test_check_interval_default_and_override() -> None:
    one = Strategy()
    assert check_interval(one, {}) == 10
    assert check_interval(one, {"MIRRORFIT_PREEMPTION_CHECK_STEPS": "3"}) == 3
    for bad in ("0", "-2", "ten"):
        with pytest.raises(ValueError, match="MIRRORFIT_PREEMPTION_CHECK_STEPS must be"):
            check_interval(one, {"MIRRORFIT_PREEMPTION_CHECK_STEPS": bad})


# --- fit ------------------------------------------------------------------------------------
X = np.random.default_rng(0).normal(size=(200, 5)).astype("float32")
Y = (X[:, 0] + X[:, 1] > 0).astype("int64")


def _model() -> mirrorfit.Model:
    mirrorfit.set_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Dropout(0.2),
                                 torch.nn.Linear(8, 2))
    model = mirrorfit.Model(module)
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class SignalAt(Callback):
    """Sends ``sig`` to this process after global step ``at``; records on_preemption."""

    def __init__(self, at: int, sig: int = signal.SIGUSR1, steps: int = 20) -> None:
        super().__init__()
        self.at, self.sig, self.steps, self.preempted_at = at, sig, steps, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * self.steps + batch + 1 == self.at:
            os.kill(os.getpid(), self.sig)

    def on_preemption(self):
        trainer = self.model.training_context
        self.preempted_at = (trainer.epoch, trainer.step)


def _fit(model, callbacks, batch_size=10):
    model.fit(X, Y, batch_size=batch_size, epochs=3, verbose=0, callbacks=callbacks, seed=5)
    return [w.copy() for w in model.get_weights()]


@pytest.mark.parametrize(("sig", "at", "batch_size", "stop"), [
    (signal.SIGUSR1, 23, 10, (1, 10)),   # mid-epoch: the next multiple of 10 steps
    (signal.SIGTERM, 13, 10, (0, 20)),   # ... also at an epoch's last step
    (signal.SIGUSR1, 2, 40, (1, 0)),     # 5 steps per epoch: at the epoch end
])
def test_fit_stops_at_the_agreed_step_and_resumes_exactly(tmp_path, sig, at, batch_size,
                                                          stop) -> None:
    reference = _fit(_model(), [], batch_size)
    backup = tmp_path / "backup"
    steps = 200 // batch_size
    signaller = SignalAt(at, sig, steps)
    with pytest.raises(Preempted) as info:
        _fit(_model(), [signaller, BackupAndRestore(backup, save_freq=1000)], batch_size)
    assert info.value.code == 0 and not info.value.requeued
    assert info.value.signal_name == signal.Signals(sig).name
    assert (info.value.epoch, info.value.step) == stop == signaller.preempted_at
    assert (backup / "backup.pt").is_file()
    preemption.clear()  # the next run is a new process in real life
    resumed = _fit(_model(), [BackupAndRestore(backup, save_freq=1000)], batch_size)
    for a, b in zip(resumed, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_signal_before_fit_stops_it_at_the_first_check(tmp_path, capsys) -> None:
    preemption.install()
    os.kill(os.getpid(), signal.SIGUSR1)  # e.g. the time-limit warning during set-up
    with pytest.raises(Preempted) as info:
        _fit(_model(), [])
    assert (info.value.epoch, info.value.step) == (0, 10)
    err = capsys.readouterr().err
    assert "no BackupAndRestore callback saved the training state" in err


def test_after_the_stop_sigterm_no_longer_interrupts_the_exit() -> None:
    """SLURM sends SIGTERM right after a requeue; the stopping worker ignores it so its
    teardown completes (outside fit SIGTERM would otherwise end the process)."""
    code = (
        "import os, signal, numpy as np, torch, mirrorfit\n"
        "from mirrorfit.cluster.preemption import Preempted\n"
        "model = mirrorfit.Model(torch.nn.Linear(2, 2)); model.compile('sgd', 'mse')\n"
        "mirrorfit.cluster.preemption.install(); os.kill(os.getpid(), signal.SIGUSR1)\n"
        "try:\n"
        "    model.fit(np.zeros((40, 2), 'float32'), np.zeros((40, 2), 'float32'),\n"
        "              batch_size=2, verbose=0)\n"
        "except Preempted as exc:\n"
        "    print('stopped at', exc.step, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('still alive')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["stopped at 10", "still alive"], proc.stdout
