"""Your own PyTorch loop, data-parallel: the classic DataParallel MNIST loop on DDP.

The loop is the one written for ``torch.nn.DataParallel``: a small CNN, an
optimizer, DataLoaders; forward, loss, backward, step; then accuracy on the test
set. Three changes make it data-parallel over every device (2 CPU workers on a
CPU-only host), with the same weights as one process at the same global batch:

1. ``strategy = mirrorfit.MirroredStrategy(devices=...)`` (starts the workers);
2. ``model, opt, train_loader, test_loader = strategy.distribute(model, opt, ...)``
   (DDP; each replica reads its share of every global batch, no padding);
3. ``strategy.scale_loss(loss).backward()`` (the update is the global mean, uneven
   shares too) and ``strategy.reduce(..., "sum")`` for the test counts.

    python examples/own_loop.py                      # 2 CPU workers / every GPU
    python examples/own_loop.py --devices 1          # one process
    python examples/own_loop.py --train-samples 2000 --epochs 1   # a quick check
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mirrorfit


class Net(nn.Module):
    """The DataParallel example's CNN, without dropout (its masks depend on the rank)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)


def mnist(train_samples: int, test_samples: int) -> tuple[TensorDataset, TensorDataset]:
    (x_tr, y_tr), (x_te, y_te) = mirrorfit.datasets.mnist.load_data()

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        images = (torch.from_numpy(x).float().unsqueeze(1) / 255.0 - 0.1307) / 0.3081
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)))

    return (tensors(x_tr[:train_samples], y_tr[:train_samples]),
            tensors(x_te[:test_samples], y_te[:test_samples]))


def train_epoch(strategy: mirrorfit.Strategy, model: nn.Module, opt: torch.optim.Optimizer,
                loader: DataLoader, epoch: int) -> float:
    model.train()
    seen = torch.zeros((), dtype=torch.float64)
    for step, (x, y) in enumerate(loader):
        x, y = x.to(strategy.device), y.to(strategy.device)
        loss = F.nll_loss(model(x), y)          # this replica's mean over its share
        strategy.scale_loss(loss).backward()   # DDP's average is then the global mean
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(y)
        if strategy.is_chief and step % 100 == 0:
            print(f"epoch {epoch} step {step}/{len(loader)} loss {loss.item():.4f}")
    return float(strategy.reduce(seen, "sum"))  # every sample once per epoch


@torch.no_grad()
def test(strategy: mirrorfit.Strategy, model: nn.Module, loader: DataLoader) -> dict[str, float]:
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
    for x, y in loader:
        x, y = x.to(strategy.device), y.to(strategy.device)
        out = model(x)
        totals += torch.stack([F.nll_loss(out, y, reduction="sum").double().cpu(),
                               (out.argmax(1) == y).sum().double().cpu(),
                               torch.tensor(float(len(y)), dtype=torch.float64)])
    loss_sum, correct, n = strategy.reduce(totals, "sum").tolist()  # exact: sums and counts
    return {"loss": loss_sum / n, "accuracy": correct / n, "samples": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=None,
                        help="replicas (default: every GPU, else 2 CPU workers)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the chief's weights (.npz)")
    args = parser.parse_args()

    devices = args.devices
    if devices is None:
        devices = None if mirrorfit.list_devices()[0].startswith("cuda") else 2
    strategy = mirrorfit.MirroredStrategy(devices=devices)
    if strategy.is_chief:
        print(f"Number of devices: {strategy.num_replicas_in_sync}")
    torch.manual_seed(args.seed)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    train_set, test_set = mnist(args.train_samples, args.test_samples)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)
    model, opt, train_loader, test_loader = strategy.distribute(
        model, opt, train_loader, test_loader, seed=args.seed)

    for epoch in range(args.epochs):
        seen = train_epoch(strategy, model, opt, train_loader, epoch)
        results = test(strategy, model, test_loader)
        if strategy.is_chief:
            print(f"epoch {epoch}: trained on {seen:.0f} samples; test loss "
                  f"{results['loss']:.4f}, accuracy {results['accuracy']:.4f} "
                  f"({results['samples']:.0f} samples)")
    if args.save and strategy.is_chief:
        module = getattr(model, "module", model)  # the DDP wrapper holds the network
        np.savez(args.save, **{k: v.detach().cpu().numpy()
                               for k, v in module.state_dict().items()})


if __name__ == "__main__":
    main()
