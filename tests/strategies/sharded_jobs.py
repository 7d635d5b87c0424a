"""Worker scripts for the ShardedStrategy tests (``test_sharded_workers.py``).

``TRAIN`` (2 workers) first compiles modules FSDP2 cannot shard (each refused), then
trains with gradient accumulation, trains again until a step
in the middle of an epoch with BackupAndRestore and ModelCheckpoint, gathers the
weights on every rank, writes a consolidated ``model.save`` file, and resumes from
its own backup on 2 workers. ``RESUME`` (any replica count) resumes a copy of that
backup and, on one process, also trains the uninterrupted reference and reads the
consolidated files with ``mirrorfit.load_model``.

Both print one ``JSON`` line per rank and write ``OUT/<name>.<rank>.npz``.
"""

COMMON = r'''
import json, os, shutil, sys
import numpy as np, torch
from torch import nn
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback, LambdaCallback, ModelCheckpoint
from tests.strategies.interrupts import InterruptAt, Interrupted

out = sys.argv[2]
replicas = int(sys.argv[1])
strategy = mirrorfit.ShardedStrategy(devices=replicas)
rng = np.random.default_rng(0)  # the same arrays on every rank
x = rng.normal(size=(100, 6)).astype("float32")
y = (x[:, 0] - x[:, 1] > 0).astype("int64") + (x[:, 2] > 0.5).astype("int64")
EPOCHS, BATCH, SEED = 3, 20, 5  # 5 steps an epoch


def architecture():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def build(optimizer="adam", **compile_kwargs):
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(architecture())
        model.compile(optimizer, mirrorfit.losses.SparseCategoricalCrossentropy(
            from_logits=True), ["accuracy"], **compile_kwargs)
    return model


def mixed_precision_run(name):
    """bfloat16: the dtype of the first layer's weight inside its forward pass; float16:
    a sample that overflows (in rank 1's share of the first batch), the loss scales."""
    seen = {}
    mirrorfit.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build()
    layer = model.training_context.module[0]

    def record(module, args):  # inside the forward pass, after FSDP2 gathered the weight
        seen.setdefault("bf16", str(module.weight.dtype))

    layer.register_forward_pre_hook(record)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, seed=SEED)
    mirrorfit.mixed_precision.set_global_policy("mixed_float16")
    x16 = x.copy()
    x16[15, 0] = 1e6
    model = build()
    scales = []
    model.fit(x16, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[
        LambdaCallback(on_train_batch_end=lambda b, logs: scales.append(
            model.training_context.setup.precision.scale))])
    mirrorfit.mixed_precision.set_global_policy("float32")
    save(name, model.get_weights())
    return {"bf16_weight_in_forward": seen["bf16"], "fp16_scales": scales}


def tail_run(name):
    """41 samples at batch 20: the last step has 1 sample and rank 1 an empty share (a
    weight-0 dummy that still meets the reduce-scatter)."""
    model = build("sgd")
    model.fit(x[:41], y[:41], batch_size=20, epochs=2, verbose=0, seed=SEED)
    save(name, model.get_weights())


def save(name, arrays):
    np.savez(os.path.join(out, f"{name}.{strategy.rank}.npz"), *arrays)


def report(line):
    line["rank"] = strategy.rank
    sys.stdout.write("JSON " + json.dumps(line) + "\n")  # one write: lines never interleave
    sys.stdout.flush()
'''

TRAIN = COMMON + r'''
class GradProbe(Callback):
    """After each micro-step: does any parameter hold a (sharded) gradient yet?"""
    seen = []

    def on_train_batch_end(self, batch, logs=None):
        params = self.model.training_context.module.parameters()
        self.seen.append(any(p.grad is not None for p in params))


def tied():
    emb, head = nn.Embedding(6, 6), nn.Linear(6, 6, bias=False)
    head.weight = emb.weight
    return nn.Sequential(emb, nn.Tanh(), head)


def fsdp1():
    from torch.distributed.fsdp import FullyShardedDataParallel
    return FullyShardedDataParallel(architecture(), device_id=torch.device("cpu"))


def lazy():
    return nn.Sequential(nn.LazyLinear(16), nn.Tanh(), nn.Linear(16, 3))


# 0. modules FSDP2 cannot shard (torch 2.13 trains the FSDP1 one to wrong weights, fails
# on the others at the first step): refused at compile on every rank, before anything is
# sharded or written
line = {"refused": {}}
for name, make in (("tied", tied), ("fsdp1", fsdp1), ("lazy", lazy)):
    module = make()
    try:
        with strategy.scope():
            mirrorfit.Model(module).compile("adam", "sparse_categorical_crossentropy")
    except (TypeError, ValueError) as exc:
        line["refused"][name] = f"{type(exc).__name__}: {exc}"
    line["refused"][name + " sharded"] = any(
        type(p).__name__ == "DTensor" for p in module.parameters()) or any(
        type(m).__name__.startswith("FSDP") for m in module.modules())
line["files after refusals"] = os.listdir(out)

# 1. accumulation: no gradient reaches the shards before the update's backward
model = build("sgd", steps_per_update=2)
model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, seed=SEED, callbacks=[GradProbe()])
line["grads_after_micro_steps"] = GradProbe.seen
params = list(model.training_context.module.parameters())
line["local_numel"] = sum(p.to_local().numel() for p in params)
line["total_numel"] = sum(p.numel() for p in params)
line["param_types"] = sorted({type(p).__name__ for p in params})

class EpochWeights(Callback):
    def on_epoch_end(self, epoch, logs=None):  # collective: every rank gathers
        save(f"epoch{epoch + 1}", self.model.get_weights())


# 2. train with checkpoints and a backup every 2 steps until an interruption after global
# step 8 (the last backup: after step 6, i.e. epoch 2, step 1); then a model file
backup = os.path.join(out, "backup")
model = build()
try:
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=SEED, callbacks=[
        ModelCheckpoint(os.path.join(out, "mc", "model-{epoch}.pt")), EpochWeights(),
        InterruptAt(8), BackupAndRestore(backup, save_freq=2)])
except Interrupted:
    pass
line["backup_is_folder"] = os.path.isdir(os.path.join(backup, "backup.pt"))
line["checkpoints"] = sorted(n for n in os.listdir(os.path.join(out, "mc")) if n[0] != ".")
save("stopped", model.get_weights())  # every rank: whole arrays
model.save(os.path.join(out, "full.pt"))
save("pred", [model.predict(x[:33], batch_size=8)])  # last batch: 1 sample, rank 1 none
line["eval_tail"] = model.evaluate(x[:33], y[:33], batch_size=8, verbose=0, return_dict=True)
if strategy.is_chief:  # copies for the other replica counts (resuming deletes the backup)
    for name in ("backup-1", "backup-2", "backup-4"):
        shutil.copytree(backup, os.path.join(out, name), symlinks=True)
strategy.barrier()

# 3. resume on 2 workers from the backup: the exact step, to the end
model = build()
model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=SEED,
          callbacks=[BackupAndRestore(backup)])
save("resumed", model.get_weights())
line["backup_left"] = os.path.exists(os.path.join(backup, "backup.pt"))

# 4. mixed precision: the parameters a forward pass sees, and float16's skipped steps;
# an empty share
line.update(mixed_precision_run("fp16"))
tail_run("tail")
report(line)
'''

RESUME = COMMON + r'''
line = {}
backup = os.path.join(out, f"backup-{replicas}")
model = build()
model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=SEED,
          callbacks=[BackupAndRestore(backup)])
save(f"resumed{replicas}", model.get_weights())
# the newest ModelCheckpoint folder, read whole by every rank into a sharded model
restored = mirrorfit.restore_or_create(os.path.join(out, "mc"), build)
save(f"restored{replicas}", restored.get_weights())
line["restored_optimizer_state"] = len(restored.training_context.optimizer.state)
if replicas == 1:
    # the uninterrupted reference, on one device
    strategy = mirrorfit.OneDeviceStrategy("cpu")
    ref = build()
    ref.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=SEED)
    save("reference", ref.get_weights())
    line["reference_mixed"] = mixed_precision_run("fp16_reference")  # autocast only
    tail_run("tail_reference")
    # the consolidated files, on one device
    loaded = mirrorfit.load_model(os.path.join(out, "full.pt"), architecture())
    save("loaded", loaded.get_weights())
    save("loaded_pred", [loaded.predict(x[:33], batch_size=8)])
    line["eval_tail"] = loaded.evaluate(x[:33], y[:33], batch_size=8, verbose=0,
                                        return_dict=True)
    line["loaded_optimizer_state"] = len(loaded.training_context.optimizer.state)
    checkpoint = mirrorfit.load_model(os.path.join(out, "mc", "model-1.pt"), architecture())
    save("checkpoint1", checkpoint.get_weights())
report(line)
'''
