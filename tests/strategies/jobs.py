"""The contract job: one launch per (strategy, replica count) trains every
configuration of the contract and reports what the tests compare.

    python job.py STRATEGY REPLICAS OUT

The script seeds nothing but ``torch.manual_seed(0)`` (as a PyTorch user does):
the data order of ``fit`` must follow torch's generator. The chief writes
``OUT.npz`` (keys ``<config>/<i>``: weights, and ``<config>/pred``); every rank
prints one ``JSON`` line with its histories, evaluations and the loss scale.
"""

CONTRACT = r'''
import json, os, sys
import numpy as np, torch
from torch import nn
import mirrorfit
from tests.strategies.contract import make_strategy

kind, replicas, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)  # the only seed
strategy = make_strategy(kind, replicas)
rng = np.random.default_rng(0)  # data only: the same arrays on every rank
x = rng.normal(size=(203, 12)).astype("float32")
y = (x[:, 0] - x[:, 1] + 0.3 * x[:, 2] > 0).astype("int64") + (x[:, 3] > 1).astype("int64")
LOSS = mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)
CONFIGS = {
    "plain": dict(optimizer="sgd"),
    "adam": dict(optimizer="adam"),
    "accumulate": dict(optimizer="sgd", steps_per_update=2),
    "clipnorm": dict(optimizer="sgd", clipnorm=0.05),
    "global_clipnorm": dict(optimizer="sgd", global_clipnorm=0.05),
    "clipvalue": dict(optimizer="sgd", clipvalue=0.002),
    "bf16": dict(optimizer="sgd", policy="mixed_bfloat16"),
}
weights, report = {}, {"rank": strategy.rank, "replicas": strategy.num_replicas_in_sync}
for name, cfg in CONFIGS.items():
    cfg = dict(cfg)
    mirrorfit.mixed_precision.set_global_policy(cfg.pop("policy", "float32"))
    with strategy.scope():
        module = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3))
        model = mirrorfit.Model(module)
        model.compile(cfg.pop("optimizer"), LOSS, ["accuracy"], **cfg)
    hist = model.fit(x, y, batch_size=40, epochs=2, verbose=0)  # no seed: torch's generator
    ev = model.evaluate(x, y, batch_size=64, return_dict=True, verbose=0)
    pred = model.predict(x[:101], batch_size=16)
    report[name] = {"history": hist.history, "eval": ev,
                    "precision": type(model.training_context.setup.precision).__name__}
    for i, w in enumerate(model.get_weights()):
        weights[f"{name}/{i}"] = w
    weights[f"{name}/pred"] = pred
mirrorfit.mixed_precision.set_global_policy("float32")
if strategy.is_chief:
    np.savez(out, **weights)
sys.stdout.write("JSON " + json.dumps(report) + "\n")  # one write: lines never interleave
sys.stdout.flush()
'''

FP16 = r'''
import json, os, signal, sys
import numpy as np, torch
from torch import nn
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback

backup_dir, out, die_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
strategy = mirrorfit.MirroredStrategy(devices=2)
torch.manual_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(200, 6)).astype("float32")
y = rng.normal(size=(200, 1)).astype("float32")
x[150, 0] = 1e6  # step 4 of each epoch (samples 120-159, unshuffled): rank 1's
# share overflows float16
mirrorfit.mixed_precision.set_global_policy("mixed_float16")
with strategy.scope():
    model = mirrorfit.Model(nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)))
    model.compile("adam", "mse")


class Record(Callback):
    steps = []

    def on_train_batch_end(self, batch, logs=None):
        ctx = self.model.training_context
        done = ctx.epoch * 5 + batch + 1
        total = sum(w.double().sum() for w in ctx.module.state_dict().values())
        self.steps.append({"step": done, "scale": ctx.setup.precision.scale, "w": float(total)})
        if done == die_at and strategy.rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)


model.fit(x, y, batch_size=40, epochs=3, shuffle=False, verbose=0,
          callbacks=[Record(), BackupAndRestore(backup_dir, save_freq=2)])
if strategy.is_chief:
    np.savez(out, *model.get_weights())
line = {"rank": strategy.rank, "steps": Record.steps,
        "scale": model.training_context.setup.precision.scale}
sys.stdout.write("JSON " + json.dumps(line) + "\n")
sys.stdout.flush()
'''

BF16_MNIST = r'''
import json, sys
import numpy as np, torch
from torch import nn
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
(x, y), (x_te, y_te) = mirrorfit.datasets.mnist.load_data()
x = (x[:12000].reshape(-1, 784) / 255.0).astype("float32"); y = y[:12000].astype("int64")
x_te = (x_te.reshape(-1, 784) / 255.0).astype("float32"); y_te = y_te.astype("int64")
acc = {}
for policy in ("float32", "mixed_bfloat16"):
    mirrorfit.mixed_precision.set_global_policy(policy)
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)))
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      ["accuracy"])
    model.fit(x, y, batch_size=128, epochs=2, verbose=0, seed=1)
    logs = model.evaluate(x_te, y_te, batch_size=1000, verbose=0, return_dict=True)
    acc[policy] = logs["accuracy"]
sys.stdout.write("JSON " + json.dumps({"rank": strategy.rank, "accuracy": acc}) + "\n")
sys.stdout.flush()
'''

JIT = r'''
import json, sys
import numpy as np, torch
from torch import nn
import torch._dynamo
import mirrorfit

devices = int(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=devices)
rng = np.random.default_rng(0)
x = rng.normal(size=(230, 8)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
out = {"rank": strategy.rank}
for jit in (False, True):
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
        model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      ["accuracy"], jit_compile=jit)
    model.fit(x, y, batch_size=50, epochs=1, verbose=0, seed=3)  # 5 steps, the last one 30
    model.evaluate(x, y, batch_size=50, verbose=0)  # eval mode and no grad: compiled once
    frames = dict(torch._dynamo.utils.counters["frames"])
    model.fit(x, y, batch_size=50, epochs=3, verbose=0, seed=3)
    ev = model.evaluate(x, y, batch_size=50, verbose=0, return_dict=True)
    out[str(jit)] = {"weights": [w.tolist() for w in model.get_weights()], "eval": ev,
                     "frames_after_first_epoch": frames,
                     "frames_at_end": dict(torch._dynamo.utils.counters["frames"]),
                     "compiled": type(model.training_context.setup.wrapped).__name__}
sys.stdout.write("JSON " + json.dumps(out) + "\n")
sys.stdout.flush()
'''
