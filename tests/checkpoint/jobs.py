"""The training script the checkpoint tests run in real processes.

    python job.py CONFIG_JSON

CONFIG keys: devices, backup_dir, out (npz of the chief's final weights),
record (prefix of per-rank sample logs), dropout, max_restarts, save_freq,
run (added to the attempt number: the n-th invocation of the same job),
kills (a list of {"attempt", "rank", "step", "how"}: "how" is "kill" -- SIGKILL
at the end of global step ``step`` -- or "save" -- SIGKILL in the middle of
the first backup write after global step ``step``).

Column 0 of x is the sample index; the module logs the indices of every
training forward with (label, attempt, epoch, step), so the test can check that
each sample of each epoch is trained on exactly once across interruptions.
"""

JOB = r'''
import json, os, signal, sys
import numpy as np, torch
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback

cfg = json.loads(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=cfg["devices"],
                                      max_restarts=cfg.get("max_restarts", 0))
ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) + cfg.get("run", 0)
RANK = strategy.rank
N, BATCH, EPOCHS = 203, 20, 3
STEPS = -(-N // BATCH)
CURRENT = None
LOG = open(f"{cfg['record']}.{RANK}", "a")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                        torch.nn.Dropout(cfg["dropout"]), torch.nn.Linear(16, 3))

    def forward(self, x):
        if CURRENT is not None:
            LOG.write(json.dumps([cfg["label"], ATTEMPT, *CURRENT, x[:, 0].long().tolist()]) + "\n")
            LOG.flush()
        return self.body(x[:, 1:])


class Faults(Callback):
    """Records the position for the module's log; dies where the config says."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        global CURRENT
        CURRENT = (self.epoch, batch)

    def on_train_batch_end(self, batch, logs=None):
        global CURRENT
        CURRENT = None
        done = self.epoch * STEPS + batch + 1
        for k in cfg.get("kills", []):
            if k["attempt"] == ATTEMPT and k["rank"] == RANK and done == k["step"]:
                if k["how"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                ARMED.append(True)


ARMED = []
_real_save = torch.save


def save_then_die_midway(obj, f, *args, **kwargs):
    if ARMED:  # a crash in the middle of a write: half a zip file, then SIGKILL
        f.write(b"PK\x03\x04" + b"\0" * 4096)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_save(obj, f, *args, **kwargs)


torch.save = save_then_die_midway

mirrorfit.set_seed(0)
rng = np.random.default_rng(0)
feats = rng.normal(size=(N, 6)).astype("float32")
x = np.concatenate([np.arange(N, dtype="float32")[:, None], feats], axis=1)
y = (feats[:, 0] + feats[:, 1] > 0).astype("int64") + (feats[:, 2] > 1).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(Net())
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
backup = BackupAndRestore(cfg["backup_dir"], save_freq=cfg.get("save_freq", 4))
hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=11,
                 validation_data=(x[:50], y[:50]), callbacks=[Faults(), backup])
if strategy.is_chief:
    np.savez(cfg["out"], *model.get_weights())
line = json.dumps({"rank": RANK, "attempt": ATTEMPT, "history": hist.history, "epochs": hist.epoch})
sys.stdout.write("JSON " + line + "\n")  # one write: lines of workers never interleave
sys.stdout.flush()
'''
