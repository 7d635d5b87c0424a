"""The training script the preemption tests run (under SLURM and under mirrorfit's
own launcher).

    python preempt_job.py CONFIG_JSON

CONFIG keys: devices (replicas), dir (where the job writes files), out (npz of the
chief's final weights), backup (BackupAndRestore's directory, none: no callback),
save_freq (the backup's, default 1000: only a preemption saves),
slow (true: in the first attempt, after global step ``ready`` the chief creates
``dir/ready`` and every step sleeps ``pause`` seconds, so a test's signal lands
mid-training). The first attempt is SLURM_RESTART_COUNT=0 under SLURM, else every
run with ``slow``.

The job prints ``START rank=R SLURM_RESTART_COUNT=N``; each worker writes its pid
to ``dir/pid.R``; a callback's ``on_preemption`` prints ``PREEMPTED rank=R
epoch=E step=S``; after fit the chief prints ``FIT DONE`` and saves the weights.
1200 samples, global batch 20 -> 60 steps per epoch, 2 epochs, Adam, dropout.
"""

PREEMPT_JOB = r'''
import json, os, sys, time
import numpy as np, torch
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback

cfg = json.loads(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=cfg["devices"])
RANK = strategy.rank
RESTART = os.environ.get("SLURM_RESTART_COUNT", "0")
SLOW = bool(cfg.get("slow")) and RESTART == "0"
STEPS, EPOCHS = 60, 2
sys.stdout.write(f"START rank={RANK} SLURM_RESTART_COUNT={RESTART}\n")  # one write per line
sys.stdout.flush()
with open(os.path.join(cfg["dir"], f"pid.{RANK}"), "w") as f:
    f.write(str(os.getpid()))


class Pace(Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        done = self.epoch * STEPS + batch + 1
        if SLOW and done >= cfg.get("ready", 15):
            if RANK == 0 and done == cfg.get("ready", 15):
                open(os.path.join(cfg["dir"], "ready"), "w").close()
            time.sleep(cfg.get("pause", 0.1))

    def on_preemption(self):
        trainer = self.model.training_context
        sys.stdout.write(f"PREEMPTED rank={RANK} epoch={trainer.epoch} step={trainer.step}\n")
        sys.stdout.flush()
        return False  # saved nothing itself


rng = np.random.default_rng(0)
x = rng.normal(size=(1200, 10)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
mirrorfit.set_seed(0)
with strategy.scope():
    module = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Dropout(0.1),
                                 torch.nn.Linear(32, 3))
    model = mirrorfit.Model(module)
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
callbacks = [Pace()]
if cfg.get("backup"):
    # by default only preemption saves; save_freq="epoch" also at each epoch's end
    callbacks.append(BackupAndRestore(cfg["backup"], save_freq=cfg.get("save_freq", 1000)))
model.fit(x, y, batch_size=20, epochs=EPOCHS, verbose=0, callbacks=callbacks, seed=3)
if strategy.is_chief:
    print("FIT DONE", flush=True)
    np.savez(cfg["out"], *model.get_weights())
'''
