"""The training script the 2-worker callback tests run in real processes.

    python job.py CONFIG_JSON

CONFIG keys: devices, dir (where the CSV log, TensorBoard logs and the backup
go), max_restarts, kills (a list of {"attempt", "rank", "step"}: SIGKILL at the
end of global step ``step``). Every Keras-style callback is in the one run:
EarlyStopping (restore_best_weights), ReduceLROnPlateau, LearningRateScheduler
(a schedule that differs per rank on purpose: the chief's value must win),
CSVLogger, TensorBoard (batch scalars every 3 steps, histograms every 2
epochs), LambdaCallback and BackupAndRestore every 4 steps; verbose=2 on the chief
and 0 elsewhere (the step-time line must still gather on every rank).
"""

JOB = r'''
import json, os, signal, sys
import numpy as np, torch
import mirrorfit
from mirrorfit.callbacks import (BackupAndRestore, CSVLogger, Callback, EarlyStopping,
                                 LambdaCallback, LearningRateScheduler, ReduceLROnPlateau,
                                 TensorBoard)

cfg = json.loads(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=cfg["devices"],
                                      max_restarts=cfg.get("max_restarts", 0))
ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
RANK = strategy.rank
N, BATCH, EPOCHS = 203, 20, 12
STEPS = -(-N // BATCH)
D = cfg["dir"]


class Faults(Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self.epoch * STEPS + batch + 1
        for k in cfg.get("kills", []):
            if k["attempt"] == ATTEMPT and k["rank"] == RANK and done == k["step"]:
                os.kill(os.getpid(), signal.SIGKILL)


mirrorfit.set_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(N, 6)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
xv = rng.normal(size=(60, 6)).astype("float32")
yv = (xv[:, 0] + xv[:, 1] > 0).astype("int64") + (xv[:, 2] > 1).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                                torch.nn.Linear(16, 3)))
    model.compile(torch.optim.Adam(model.module.parameters(), lr=0.05),
                  mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
text = model.summary(input_shape=(6,))
batch_logs = []
callbacks = [
    Faults(),
    EarlyStopping("val_loss", min_delta=0.002, patience=2, restore_best_weights=True, verbose=1),
    ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=0.01, verbose=1),
    LearningRateScheduler(lambda epoch, lr: lr * (0.9 if RANK == 0 else 0.5)),
    CSVLogger(os.path.join(D, "log.csv")),
    TensorBoard(os.path.join(D, "tb"), update_freq=3, histogram_freq=2),
    LambdaCallback(on_train_batch_end=lambda b, logs: batch_logs.append(logs["loss"])),
    BackupAndRestore(os.path.join(D, "backup"), save_freq=4),
]
# the Keras guide's habit: only the chief asks for output (fit takes the chief's verbose)
hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=2 if RANK == 0 else 0, seed=11,
                 validation_data=(xv, yv), callbacks=callbacks)
if strategy.is_chief:
    np.savez(os.path.join(D, "weights.npz"), *model.get_weights())
line = json.dumps({"rank": RANK, "attempt": ATTEMPT, "history": hist.history,
                   "epochs": hist.epoch, "stopped_epoch": callbacks[1].stopped_epoch,
                   "best_epoch": callbacks[1].best_epoch, "summary": text,
                   "batch_logs": len(batch_logs), "lr": model.optimizer.param_groups[0]["lr"]})
sys.stdout.write("JSON " + line + "\n")  # one write: lines of workers never interleave
sys.stdout.flush()
'''
