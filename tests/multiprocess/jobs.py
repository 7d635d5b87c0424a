"""Scripts the multi-process tests run in real worker processes.

Each job prints ``JSON {...}`` lines from every rank (the tests pick what they
need) and, where it says so, saves the chief's weights with numpy.
"""

TRAIN_AND_EVAL = r'''
import json, os, sys
import numpy as np, torch
import mirrorfit

devices, optimizer, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
strategy = mirrorfit.MirroredStrategy(devices=devices)
mirrorfit.set_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(1001, 20)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Sequential(
        torch.nn.Linear(20, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)))
    model.compile(optimizer, mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
# 1001 samples, global batch 60: 17 steps per epoch, the last one partial (41)
hist = model.fit(x, y, batch_size=60, epochs=2, verbose=0, seed=7)
ev = model.evaluate(x, y, batch_size=100, return_dict=True, verbose=0)
pred = model.predict(x, batch_size=64)
if strategy.is_chief:
    np.savez(out, *model.get_weights(), pred=pred)
line = json.dumps({"rank": strategy.rank, "replicas": strategy.num_replicas_in_sync,
                   "history": hist.history, "eval": ev,
                   "cores": sorted(os.sched_getaffinity(0)), "threads": torch.get_num_threads()})
sys.stdout.write("JSON " + line + "\n")  # one write: lines of two workers never interleave
sys.stdout.flush()
'''

RAISE_ON_RANK = r'''
import sys
import numpy as np, torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Linear(4, 1))
    model.compile("sgd", "mse")

class Boom(mirrorfit.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3 and self.model.strategy.rank == 1:
            raise ValueError("user code failed on purpose at step 3")

x = np.zeros((512, 4), "float32"); y = np.zeros((512, 1), "float32")
model.fit(x, y, batch_size=16, epochs=50, verbose=0, callbacks=[Boom()])
print("finished without the error")
'''
