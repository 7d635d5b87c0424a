"""Worker script for the PipelineStrategy tests (``test_pipeline_workers.py``).

``TRAIN`` (2 workers, 2 stages) trains a small MLP and a small CNN with SGD and Adam
under GPipe and 1F1B, and a model cut inside a nested ``nn.Sequential``
(``split_points=["blocks.3"]``), and, in the same process, the same models on one
device (the reference); then trains with BackupAndRestore and ModelCheckpoint until an
interruption in the middle of an epoch, writes a consolidated ``model.save`` file,
resumes from the backup at the exact step, and reads the files back with
``mirrorfit.load_model`` on one device. It prints one ``JSON`` line per rank and
writes ``OUT/<name>.<rank>.npz``.
"""

TRAIN = r'''
import json, os, shutil, sys
from collections import OrderedDict
import numpy as np, torch
from torch import nn
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback, ModelCheckpoint
from tests.strategies.interrupts import InterruptAt, Interrupted

out = sys.argv[1]
# the first strategy starts the 2 workers (the parent waits for them and exits); later
# ones in the workers join the same process group
gpipe = mirrorfit.PipelineStrategy(stages=2, microbatches=4)
rng = np.random.default_rng(0)  # the same arrays on every rank
x = rng.normal(size=(90, 6)).astype("float32")  # batch 16: the last batch holds 10 (2 chunks)
y = (x[:, 0] - x[:, 1] > 0).astype("int64") + (x[:, 2] > 0.5).astype("int64")
xc = rng.normal(size=(64, 1, 8, 8)).astype("float32")
yc = (xc[:, 0, :4].mean(axis=(1, 2)) > 0).astype("int64")
SEED, ONE = 5, mirrorfit.OneDeviceStrategy("cpu")


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def build(strategy, arch, optimizer="adam"):
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(arch())
        model.compile(optimizer, mirrorfit.losses.SparseCategoricalCrossentropy(
            from_logits=True), ["accuracy"])
    return model


def rank():
    return gpipe.rank


def save(name, arrays):
    np.savez(os.path.join(out, f"{name}.{rank()}.npz"), *arrays)


line = {"rank": rank()}
# 1. the same weights, logs, evaluation and predictions as one device
for name, arch, data, optimizer, schedule in (
        ("mlp_sgd_gpipe", mlp, (x, y), "sgd", "gpipe"),
        ("mlp_adam_1f1b", mlp, (x, y), "adam", "1f1b"),
        ("cnn_adam_gpipe", cnn, (xc, yc), "adam", "gpipe"),
        ("cnn_sgd_1f1b", cnn, (xc, yc), "sgd", "1f1b")):
    strategy = mirrorfit.PipelineStrategy(stages=2, microbatches=4, schedule=schedule)
    got = {}
    for label, s in (("pipe", strategy), ("one", ONE)):
        model = build(s, arch, optimizer)
        history = model.fit(*data, batch_size=16, epochs=2, verbose=0, seed=SEED)
        save(f"{name}.{label}", model.get_weights())
        got[label] = {"history": history.history,
                      "evaluate": model.evaluate(*data, batch_size=12, verbose=0,
                                                 return_dict=True)}
        save(f"{name}.{label}.pred", [model.predict(data[0][:33], batch_size=8)])
    line[name] = got

# a split point inside a nested nn.Sequential ("blocks.3"): blocks is cut in two, each
# worker keeps its stage's leaves only; one device's weights
def nested():
    return nn.Sequential(OrderedDict([
        ("embed", nn.Linear(6, 16)),
        ("blocks", nn.Sequential(nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16))),
        ("head", nn.Sequential(nn.Tanh(), nn.Linear(16, 3)))]))


nested_pipe = mirrorfit.PipelineStrategy(stages=2, microbatches=4, split_points=["blocks.3"])
for label, s in (("pipe", nested_pipe), ("one", ONE)):
    model = build(s, nested)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=SEED)
    save(f"nested.{label}", model.get_weights())
    if label == "pipe":
        module = model.training_context.module
        line["nested_real"] = [n for n, p in module.named_parameters() if not p.is_meta]
        line["nested_stage"] = list(model.training_context.setup.placed.state_dict())

# sequences of another length: each input shape gets its own stages (torch's stages keep
# the shapes they inferred on their first step)
codes = rng.integers(0, 10, size=(8, 7)).astype("int64")
for label, s in (("pipe", gpipe), ("one", ONE)):
    torch.manual_seed(0)
    with s.scope():
        model = mirrorfit.Model(nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 3)))
        model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(codes[:, :5], codes[:, 1:6] % 3, batch_size=4, epochs=1, verbose=0, seed=SEED)
    model.fit(codes[:, :6], codes[:, 1:7] % 3, batch_size=4, epochs=1, verbose=0, seed=SEED)
    save(f"lengths.{label}", [*model.get_weights(), model.predict(codes[:, :5], batch_size=4),
                              model.predict(codes, batch_size=4)])

# float16: an overflowing sample (the first batch) skips that step on both stages, with
# one device's loss scales and weights
x16 = x.copy()
x16[3, 0] = 1e6
mirrorfit.mixed_precision.set_global_policy("mixed_float16")
for label, s in (("pipe", gpipe), ("one", ONE)):
    model = build(s, mlp)
    scales = []
    model.fit(x16, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[
        mirrorfit.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: scales.append(
            model.training_context.setup.precision.scale))])
    line[f"fp16_scales_{label}"] = scales
    save(f"fp16.{label}", model.get_weights())
mirrorfit.mixed_precision.set_global_policy("float32")

# each worker keeps its stage's parameters; the other stage's are meta tensors
model = build(gpipe, mlp)
line["real_params"] = [n for n, p in model.training_context.module.named_parameters()
                       if not p.is_meta]
line["optimizer_params"] = sum(len(g["params"]) for g in model.optimizer.param_groups)

# 2. a batch that does not split into the micro-batches: the same error on every rank
model = build(gpipe, mlp)
try:
    model.fit(x, y, batch_size=18, epochs=1, verbose=0)
except ValueError as exc:
    line["batch_error"] = str(exc)


class EpochWeights(Callback):
    def on_epoch_end(self, epoch, logs=None):  # collective: every rank gathers
        save(f"epoch{epoch + 1}", self.model.get_weights())


# 3. checkpoints: a backup every 2 steps; interrupted after global step 9 (the last
# backup: after step 8, i.e. epoch 2, step 2); ModelCheckpoint folders each epoch
strategy = gpipe
backup = os.path.join(out, "backup")
model = build(strategy, mlp)
try:
    model.fit(x, y, batch_size=16, epochs=3, verbose=1, seed=SEED, callbacks=[
        ModelCheckpoint(os.path.join(out, "mc", "model-{epoch}.pt")), EpochWeights(),
        InterruptAt(9), BackupAndRestore(backup, save_freq=2)])
except Interrupted:
    pass
line["backup_is_folder"] = os.path.isdir(os.path.join(backup, "backup.pt"))
line["checkpoints"] = sorted(n for n in os.listdir(os.path.join(out, "mc")) if n[0] != ".")
save("stopped", model.get_weights())
model.save(os.path.join(out, "full.pt"))
if strategy.is_chief:
    shutil.copytree(backup, os.path.join(out, "backup-copy"), symlinks=True)
strategy.barrier()
model = build(strategy, mlp)
model.fit(x, y, batch_size=16, epochs=3, verbose=0, seed=SEED,
          callbacks=[BackupAndRestore(backup)])
save("resumed", model.get_weights())
reference = build(ONE, mlp)
line["reference_history"] = reference.fit(x, y, batch_size=16, epochs=3, verbose=0,
                                          seed=SEED).history
save("reference", reference.get_weights())
# the files on one device (no strategy in scope: the default, one device)
loaded = mirrorfit.load_model(os.path.join(out, "full.pt"), mlp())
save("loaded", loaded.get_weights())
line["loaded_optimizer_state"] = len(loaded.training_context.optimizer.state)
checkpoint = mirrorfit.load_model(os.path.join(out, "mc", "model-1.pt"), mlp())
save("checkpoint1", checkpoint.get_weights())
line["checkpoint_optimizer_state"] = len(checkpoint.training_context.optimizer.state)
sys.stdout.write("JSON " + json.dumps(line) + "\n")
sys.stdout.flush()
'''

DATA_PARALLEL = r'''
import json, os, sys
import numpy as np, torch
from torch import nn
import mirrorfit
from tests.strategies.interrupts import InterruptAt, Interrupted

out = sys.argv[1]
strategy = mirrorfit.PipelineStrategy(stages=2, microbatches=2, replicas=2)  # 4 workers
rng = np.random.default_rng(0)
x = rng.normal(size=(90, 6)).astype("float32")  # batch 16: shares of 8, the last of 5
y = (x[:, 0] - x[:, 1] > 0).astype("int64") + (x[:, 2] > 0.5).astype("int64")


def build(s):
    torch.manual_seed(0)
    with s.scope():
        model = mirrorfit.Model(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16),
                                              nn.Tanh(), nn.Linear(16, 3)))
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(
            from_logits=True), ["accuracy"])
    return model


line = {"rank": strategy.rank, "stage": strategy.stage, "replica": strategy.replica.rank,
        "replicas": strategy.num_replicas_in_sync}
for label, s in (("pipe", strategy), ("one", mirrorfit.OneDeviceStrategy("cpu"))):
    model = build(s)
    # 41 samples at batch 8: the last step has 1 sample and replica 1 an empty share (a
    # weight-0 dummy sample that still runs through its stages)
    model.fit(x[:41], y[:41], batch_size=8, epochs=1, verbose=0, seed=5)
    np.savez(os.path.join(out, f"dp.tail.{label}.{strategy.rank}.npz"), *model.get_weights())
    model = build(s)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=5)
    # the last evaluation and prediction batches hold 1 sample: replica 1's share is empty
    line[label] = {"history": history.history, "evaluate": model.evaluate(
        x[:41], y[:41], batch_size=8, verbose=0, return_dict=True)}
    np.savez(os.path.join(out, f"dp.{label}.{strategy.rank}.npz"), *model.get_weights(),
             model.predict(x[:33], batch_size=8))


# a backup folder written by the 4 workers (each stage's part once, though 2 replicas
# hold it), resumed at the exact step
backup = os.path.join(out, "backup")
model = build(strategy)
try:
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=5,
              # after global step 8; the last backup: step 6
              callbacks=[InterruptAt(8), mirrorfit.callbacks.BackupAndRestore(backup, save_freq=3)])
except Interrupted:
    pass
model = build(strategy)
model.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=5,
          callbacks=[mirrorfit.callbacks.BackupAndRestore(backup)])
np.savez(os.path.join(out, f"dp.resumed.{strategy.rank}.npz"), *model.get_weights())
sys.stdout.write("JSON " + json.dumps(line) + "\n")
sys.stdout.flush()
'''
