"""The script the invariance tests run once per replica count (1, 2, 3, 4).

One launch trains every configuration and dumps the chief's weights into one
``.npz`` (keys ``<config>/<tensor>``); every rank writes its report to
``<out>.rank<r>.json``.
With 2 replicas the Adam configuration comes from ``multi_gpu_model`` (Keras
1/2 style), which starts the two workers itself.
"""

GROUP = r'''
import json, math, sys, warnings
import numpy as np, torch
from torch import nn
import mirrorfit
from mirrorfit.strategies.ddp import UnusedParametersError

replicas, out = int(sys.argv[1]), sys.argv[2]
(x_all, y_all), (x_te, y_te) = mirrorfit.datasets.mnist.load_data()
x_all = (x_all[:1000].reshape(-1, 784) / 255.0).astype("float32")
y_all = y_all[:1000].astype("int64")
x_te = (x_te[:1001].reshape(-1, 784) / 255.0).astype("float32")   # odd size
y_te = y_te[:1001].astype("int64")
LOSS = mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)

def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))

def bn_net():
    torch.manual_seed(1)
    return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 4, 5, stride=3),
                         nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(256, 32),
                         nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

class Unused(nn.Module):
    """``extra`` takes no part in the loss (``later``: only in the first forward)."""
    def __init__(self, later=False):
        super().__init__()
        torch.manual_seed(2)
        self.body, self.extra, self.later, self.calls = mlp(), nn.Linear(784, 10), later, 0
    def forward(self, x):
        self.calls += 1
        out = self.body(x)
        return out + 0.0 * self.extra(x) if self.later and self.calls == 1 else out

shim = mirrorfit.multi_gpu_model(mlp(), gpus=2) if replicas == 2 else None
strategy = mirrorfit.MirroredStrategy(devices=replicas, sync_batchnorm=True)
strict = mirrorfit.MirroredStrategy(devices=replicas, find_unused_parameters=False)
weights, report = {}, {"rank": strategy.rank, "replicas": strategy.num_replicas_in_sync}
# in a worker (or with one replica) strategy.run calls the function here, in the scope
report["run"] = strategy.run(lambda: mirrorfit.get_strategy().reduce(1.0, "sum"))

def keep(name, model):
    for (key, _), w in zip(model.module.state_dict().items(), model.get_weights()):
        weights[f"{name}/{key}"] = w

def scoped(module):
    with strategy.scope():
        return mirrorfit.Model(module)

def label_mean(y_pred, y_true):
    """Per-sample labels: their mean is exact only if every sample counts once."""
    return y_true.to(torch.float64)

METRICS = ["accuracy", label_mean]

def train(name, model, optimizer, n, batch, *, steps_per_update=1, **fit):
    model.compile(optimizer, LOSS, METRICS, steps_per_update=steps_per_update)
    calls = [0]
    wrapped = model.training_context.setup.placed
    if hasattr(wrapped, "register_comm_hook"):   # count DDP's gradient all-reduces
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        def counting(state, bucket):
            calls[0] += 1
            return allreduce_hook(state, bucket)
        wrapped.register_comm_hook(None, counting)
    hist = model.fit(x_all[:n], y_all[:n], batch_size=batch, epochs=1, verbose=0, seed=5, **fit)
    keep(name, model)
    report[name] = {"history": hist.history, "allreduce_calls": calls[0],
                    "updates": math.ceil(math.ceil(n / batch) / steps_per_update)}
    return model

sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
# 961 = 15 * 64 + 1: the last global batch has one sample, so shares are empty
m = train("sgd", scoped(mlp()), "sgd", 961, 64, validation_data=(x_te, y_te),
          validation_batch_size=100)
report["sgd"]["evaluate"] = m.evaluate(x_te, y_te, batch_size=100, verbose=0, return_dict=True)
pred = m.predict(x_te, batch_size=64)
if strategy.is_chief:
    weights["predict"] = pred
fresh = scoped(mlp())        # bit-identical weights on every replica count
fresh.compile("sgd", LOSS, METRICS)
report["fresh_evaluate"] = fresh.evaluate(x_te, y_te, batch_size=100, verbose=0,
                                          return_dict=True)
# 1000 = 15 * 64 + 40; 64 is not a multiple of 3
train("adam", shim or scoped(mlp()), "adam", 1000, 64)
if shim is not None:
    report["adam"]["shim_replicas"] = shim.strategy.num_replicas_in_sync
# 963 = 15 * 64 + 3: the last shares are 2+1, 1+1+1 and 1+1+1+0 samples (BatchNorm on
# 2 samples is so ill-conditioned that float32 itself differs by ~1e-4 from float64)
bn_module = bn_net()
m = train("bn", scoped(bn_module), sgd(bn_module), 963, 64)
report["bn"]["layers"] = sorted({type(l).__name__ for l in m.module.modules()})
report["bn"]["evaluate"] = m.evaluate(x_te, y_te, batch_size=100, verbose=0, return_dict=True)
# accumulation: 4 micro-batches of 16 per update == one batch of 64
accum_module, ref_module = mlp(), mlp()
train("accum", scoped(accum_module), sgd(accum_module), 1000, 16, steps_per_update=4)
train("accum_ref", scoped(ref_module), sgd(ref_module), 1000, 64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    unused = Unused()
    train("unused_auto", scoped(unused), sgd(unused), 1000, 64)
report["unused_auto"]["warnings"] = [str(w.message) for w in caught]
for name, module in (("unused_strict", Unused()), ("unused_later", Unused(later=True))):
    if replicas == 1:
        continue
    with (strict if name == "unused_strict" else strategy).scope():
        model = mirrorfit.Model(module)
        model.compile("sgd", LOSS)
    try:
        model.fit(x_all, y_all, batch_size=64, epochs=1, verbose=0, seed=5)
        report[name] = {"error": None}
    except UnusedParametersError as exc:
        report[name] = {"error": str(exc)}
if strategy.is_chief:
    np.savez(out, **weights)
with open(f"{out}.rank{strategy.rank}.json", "w") as fp:   # stdout lines of ranks can interleave
    json.dump(report, fp)
'''
