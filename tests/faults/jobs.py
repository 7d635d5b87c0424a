"""Scripts the fault tests run as ``python job.py ...`` (2 workers each).

Every worker prints ``JSON {"rank", "pid"}`` once it is up, and ``JSON
{"fault_at": time.time(), ...}`` right before it injects a fault, so a test can
measure how long the job took to end and check that every worker is gone.
"""

#: every job's first lines: emit() writes one JSON line in one write() (workers share
#: the pipe, and print() writes the text and the newline separately)
_PRELUDE = r'''
import json, sys


def emit(obj):
    sys.stdout.write("JSON " + json.dumps(obj) + "\n")
    sys.stdout.flush()
'''

# One script, many fault points: python job.py POINT RANK [TIMEOUT]
# RANK is the rank that faults (-1: every rank); TIMEOUT the collective timeout.
FAULT = _PRELUDE + r'''
import json, os, signal, sys, time
import numpy as np, torch
import mirrorfit

point, bad_rank = sys.argv[1], int(sys.argv[2])
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else None
workdir = sys.argv[4] if len(sys.argv) > 4 else "."
strategy = mirrorfit.MirroredStrategy(devices=2, timeout=timeout)
rank = strategy.rank
mine = bad_rank in (-1, rank)
emit({"rank": rank, "pid": os.getpid()})


def mark(where):
    emit({"fault_at": time.time(), "rank": rank, "point": where})


def fault(where):
    mark(where)
    if point == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "exit":
        os._exit(3)
    if point == "sys_exit":
        sys.exit(0)  # a rank that leaves early without an error
    if point == "stuck":
        time.sleep(3600)  # a rank that never reaches the next collective
    raise RuntimeError(f"injected fault at {where} on rank {rank}")


class Net(torch.nn.Module):
    def __init__(self, width=2):
        super().__init__()
        if point == "build" and mine:
            fault("build")
        self.lin = torch.nn.Linear(4, width)
        self.train_calls = 0
        self.evaluating = False

    def forward(self, x):
        if self.evaluating:
            if point == "evaluate" and mine:
                fault("evaluate")
        else:
            self.train_calls += 1
            if point == "first_step" and mine and self.train_calls == 1:
                fault("first_step")
            if point in ("mid_epoch", "kill", "exit", "sys_exit", "stuck") and mine \
                    and self.train_calls == 20:
                fault(point)
        return self.lin(x)


class Hooks(mirrorfit.callbacks.Callback):
    def on_test_begin(self, logs=None):
        self.model.module.evaluating = True

    def on_test_end(self, logs=None):
        self.model.module.evaluating = False

    def on_epoch_end(self, epoch, logs=None):
        if point == "callback" and mine and epoch == 0:
            fault("callback")
        if point == "chief_only_collective" and strategy.is_chief and epoch == 0:
            mark(point)
            strategy.barrier()  # a collective the other rank never reaches


def checkpoint_callbacks():
    if point != "checkpoint":
        return []
    blocker = os.path.join(workdir, "not-a-directory")
    open(blocker, "w").close()
    path = os.path.join(blocker, "ckpt-{epoch}.pt")  # the chief's save fails: parent is a file
    if hasattr(mirrorfit.callbacks, "ModelCheckpoint"):
        class Marked(mirrorfit.callbacks.ModelCheckpoint):
            def on_epoch_end(self, epoch, logs=None):
                if strategy.is_chief:
                    mark("checkpoint")
                super().on_epoch_end(epoch, logs)
        return [Marked(path)]

    class ChiefSave(mirrorfit.callbacks.Callback):  # before ModelCheckpoint existed
        def on_epoch_end(self, epoch, logs=None):
            if strategy.is_chief:
                mark("checkpoint")
                torch.save(self.model.module.state_dict(), path.format(epoch=epoch))
            strategy.barrier()
    return [ChiefSave()]


rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
if point == "bad_labels":
    y = y + 4  # class ids 4 and 5 for a 2-class output
if point == "few_samples":
    x, y = x[:1], y[:1]
with strategy.scope():
    model = mirrorfit.Model(Net(3 if point == "shapes" and mine else 2))
    if point == "shapes":
        mark("shapes")
    model.compile("sgd", "sparse_categorical_crossentropy")
if point in ("bad_labels", "few_samples"):
    mark(point)
model.fit(x, y, batch_size=16, epochs=3, verbose=0, validation_data=(x[:64], y[:64]),
          callbacks=[Hooks(), *checkpoint_callbacks()])
emit({"rank": rank, "finished": True})
'''

# Disagreements that every rank detects: each case raises on both ranks, is caught
# and reported, and the group stays usable for the next case and a final fit.
DISAGREE = _PRELUDE + r'''
import json, os, sys
import numpy as np, torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
rank = strategy.rank
emit({"rank": rank, "pid": os.getpid()})
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int64")


def build(width=2, metrics=(), optimizer="sgd"):
    with strategy.scope():
        model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                                    torch.nn.Linear(8, width)))
        model.compile(optimizer, "sparse_categorical_crossentropy", list(metrics))
    return model


def case(name, fn):
    try:
        fn()
        out = {"case": name, "rank": rank, "error": None}
    except Exception as exc:
        out = {"case": name, "rank": rank, "error": type(exc).__name__, "message": str(exc)}
    emit(out)


case("shapes", lambda: build(width=2 + rank))
case("compile_args", lambda: build(metrics=["accuracy"] if rank else []))
model = build()
case("data_length", lambda: model.fit(x[:256 - 6 * rank], y[:256 - 6 * rank], batch_size=16,
                                      verbose=0))
case("fit_args", lambda: model.fit(x, y, batch_size=16, epochs=1 + rank, verbose=0))
case("batch_size", lambda: model.fit(x, y, batch_size=16 + 16 * rank, verbose=0))
case("seed", lambda: model.fit(x, y, batch_size=16, verbose=0, seed=rank))
case("validation", lambda: model.fit(x, y, batch_size=16, verbose=0,
                                     validation_data=(x[:64 + rank], y[:64 + rank])))
case("evaluate", lambda: model.evaluate(x[:100 + rank], y[:100 + rank], verbose=0))
case("predict", lambda: model.predict(x[:100 + rank]))
case("few_samples", lambda: model.fit(x[:1], y[:1], batch_size=16, verbose=0))
case("small_batch", lambda: model.fit(x, y, batch_size=1, verbose=0))
hist = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
emit({"rank": rank, "final_loss": hist.history["loss"][-1]})
'''

# TerminateOnNaN: rank 1's output turns NaN at its training call NAN_STEP (1-based),
# so only one rank has a NaN loss; the global loss is NaN on both.
NAN = _PRELUDE + r'''
import os, sys, time
import numpy as np, torch
import mirrorfit

workdir, nan_step = sys.argv[1], int(sys.argv[2])
strategy = mirrorfit.MirroredStrategy(devices=2)
rank = strategy.rank
emit({"rank": rank, "pid": os.getpid()})


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        out = self.lin(x)
        if self.training:
            self.calls += 1
            if rank == 1 and self.calls == nan_step:
                emit({"fault_at": time.time(), "rank": rank, "point": "nan"})
                out = out * float("nan")
        return out


x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(Net())
    model.compile("sgd", "sparse_categorical_crossentropy")
nan_cb = mirrorfit.callbacks.TerminateOnNaN()
callbacks = [nan_cb]
has_ckpt = hasattr(mirrorfit.callbacks, "ModelCheckpoint")
if has_ckpt:
    callbacks += [mirrorfit.callbacks.ModelCheckpoint(os.path.join(workdir, "epoch-{epoch}.pt")),
                  mirrorfit.callbacks.ModelCheckpoint(os.path.join(workdir, "last.pt"))]
hist = model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=callbacks)
emit({"rank": rank, "stopped_at": nan_cb.stopped_at, "epochs_run": len(hist.history["loss"]),
      "has_checkpoint_callback": has_ckpt})
'''

# No TerminateOnNaN: rank 1's inputs turn NaN at its training call NAN_STEP (1-based),
# so only one rank's data is bad; mirrorfit warns once, on the chief, and training goes on.
NAN_WARN = _PRELUDE + r'''
import math, os, sys, time
import numpy as np, torch
import mirrorfit

nan_step = int(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=2)
rank = strategy.rank
emit({"rank": rank, "pid": os.getpid()})


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if rank == 1 and self.calls == nan_step:
                emit({"fault_at": time.time(), "rank": rank, "point": "nan_input"})
                x = x.clone()
                x[0, 0] = float("nan")
        return self.lin(x)


x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(Net())
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
hist = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
finite = all(math.isfinite(v) for p in model.module.parameters() for v in p.flatten().tolist())
emit({"rank": rank, "losses": hist.history["loss"], "finite_weights": finite})
'''

# A trivial 2-worker job; reports the store address and the listening sockets of
# the parent and of this worker (from /proc/net/tcp{,6}).
SMALL = _PRELUDE + r'''
import json, os, sys
import numpy as np, torch
import mirrorfit

port = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "none" else None
strategy = mirrorfit.MirroredStrategy(devices=2, port=port)


def listening(pids):
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fp:
            for line in fp.read().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                    found.append(f[1])
    return found


with strategy.scope():
    model = mirrorfit.Model(torch.nn.Linear(4, 1))
    model.compile("sgd", "mse")
model.fit(np.zeros((64, 4), "float32"), np.zeros((64, 1), "float32"), batch_size=16,
          epochs=2, verbose=0)
emit({
    "rank": strategy.rank, "pid": os.getpid(), "store": os.environ.get("MIRRORFIT_STORE"),
    "parent_listening": listening([os.getppid()]), "worker_listening": listening([os.getpid()]),
})
'''

# More devices than the host has: the parent must fail before starting workers.
TOO_MANY_DEVICES = _PRELUDE + r'''
import json, os
import torch
import mirrorfit

missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU ("cuda:0" on a CPU host)
strategy = mirrorfit.MirroredStrategy(devices=[missing, "cuda:0"])
emit({"rank": strategy.rank, "pid": os.getpid()})
'''
