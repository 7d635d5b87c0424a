"""The script ``test_disk_full.py`` runs on a small tmpfs: ``python job.py DISK``.

Each case writes a checkpoint that fits, then fills the disk (a filler file leaves
less free than the next write needs), writes again, and reports as one JSON line
what was raised, the file's digest before and after, whether it still loads, and
which temporary files were left behind.
"""

JOB = r'''
import hashlib, json, os, shutil, sys
import numpy as np, torch
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback, ModelCheckpoint
from mirrorfit.checkpoint import CheckpointWriter, atomic_write, load_checkpoint

DISK = sys.argv[1]
FILLER = os.path.join(DISK, "filler")


def emit(obj):
    sys.stdout.write("JSON " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def digest(path):
    with open(path, "rb") as fp:
        return hashlib.sha256(fp.read()).hexdigest()


def module():
    mirrorfit.set_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 2000), torch.nn.ReLU(),
                               torch.nn.Linear(2000, 2), torch.nn.Softmax(dim=-1))  # ~150 kB


def build():
    model = mirrorfit.Model(module())
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def fill(path):
    """Leave free half the size of the file at ``path``: the next write cannot fit."""
    free = shutil.disk_usage(DISK).free
    with open(FILLER, "wb") as fp:
        fp.write(b"\0" * (free - os.path.getsize(path) // 2))
    return digest(path)


def report(case, folder, path, before, fn, load):
    try:
        fn()
        error = None
    except BaseException as exc:  # the test checks what it was
        error = exc
    after = digest(path) if os.path.exists(path) else None
    try:
        load(path)
        loads = True
    except Exception as exc:
        loads = repr(exc)
    left = sorted(p for p in os.listdir(folder) if p.startswith("."))
    before = before() if callable(before) else before
    os.remove(FILLER)
    emit({"case": case, "path": path, "type": type(error).__name__,
          "mro": [c.__name__ for c in type(error).__mro__], "errno": getattr(error, "errno", None),
          "message": str(error), "needed": getattr(error, "needed", None),
          "free": getattr(error, "free", None), "before": before, "after": after,
          "size": os.path.getsize(path), "loads": loads, "temps": left,
          "cause": repr(error.__cause__) if error is not None else None})


x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
y = (x[:, 0] > 0).astype("int64")
emit({"mounted": True, "free": shutil.disk_usage(DISK).free})


def load_model(path):
    mirrorfit.load_model(path, module=module())


# 1. Model.save over an earlier save
folder = os.path.join(DISK, "save"); os.makedirs(folder)
path = os.path.join(folder, "model.pt")
model = build()
model.save(path)
report("model.save", folder, path, fill(path), lambda: model.save(path), load_model)


# 2. ModelCheckpoint in a one-process fit: epoch 1's file fits, epoch 2's does not
class FillAfterFirstSave(Callback):
    """Listed after the saving callback: fills the disk once its first file exists."""

    def __init__(self, path):
        super().__init__()
        self.path, self.before = path, None

    def _check(self):
        if self.before is None and os.path.exists(self.path):
            self.before = fill(self.path)

    def on_epoch_end(self, epoch, logs=None):
        self._check()

    def on_train_batch_end(self, batch, logs=None):
        self._check()


def fit_case(case, folder, path, saver, epochs):
    filler = FillAfterFirstSave(path)
    model = build()
    fit = lambda: model.fit(x, y, batch_size=16, epochs=epochs, verbose=0,
                            callbacks=[saver, filler])
    loader = load_model if case == "ModelCheckpoint" else (
        lambda p: load_checkpoint(p, ["backup"]))
    report(case, folder, path, lambda: filler.before, fit, loader)


folder = os.path.join(DISK, "ckpt")
path = os.path.join(folder, "last.pt")
fit_case("ModelCheckpoint", folder, path, ModelCheckpoint(path), epochs=3)

# 3. BackupAndRestore every 2 steps: the backup at step 2 fits, the one at step 4 does not
folder = os.path.join(DISK, "backup")
fit_case("BackupAndRestore", folder, os.path.join(folder, "backup.pt"),
         BackupAndRestore(folder, save_freq=2, delete_checkpoint=False), epochs=2)

# 4. an asynchronous write: the error comes back from wait() as is
folder = os.path.join(DISK, "async"); os.makedirs(folder)
path = os.path.join(folder, "weights.pt")
content = {"module": module().state_dict()}
writer = CheckpointWriter(async_save=True)
writer.save(content, path, "weights")
writer.wait()
before = fill(path)
writer.save(content, path, "weights")
report("async", folder, path, before, writer.wait, lambda p: load_checkpoint(p, ["weights"]))

# 5. a writer whose error keeps no OSError: torch's "unexpected pos" and too little space
folder = os.path.join(DISK, "bare"); os.makedirs(folder)
path = os.path.join(folder, "blob.pt")
atomic_write(path, lambda fp: fp.write(b"\1" * 100_000))
before = fill(path)


def bare_write(fp):
    failed = False
    try:
        fp.write(b"\2" * 100_000)
        fp.flush()
    except OSError:
        failed = True
    if failed:  # outside the except block: no __context__
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2")


report("bare", folder, path, before, lambda: atomic_write(path, bare_write),
       lambda p: None)
emit({"finished": True})
'''
