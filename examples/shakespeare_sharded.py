"""A character-level transformer on Tiny Shakespeare, sharded with FSDP2.

    python examples/shakespeare_sharded.py                 # 2 CPU workers (all GPUs if any)
    python examples/shakespeare_sharded.py --devices 1     # one process, nothing sharded
    python examples/shakespeare_sharded.py --data input.txt --width 384 --depth 6

Each transformer block is its own FSDP unit (``wrap=[nn.TransformerEncoderLayer]``);
the embeddings, the final norm and the head belong to the root unit. The default
text is the first 100,000 characters of Tiny Shakespeare (Karpathy's char-rnn data,
public-domain Shakespeare), shipped in ``examples/data``; ``--data`` reads another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mirrorfit

DATA = Path(__file__).parent / "data" / "tinyshakespeare_head.txt"


class CharTransformer(nn.Module):
    """Embeddings, ``depth`` causal pre-norm transformer blocks, a norm and a head."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True,
                                       norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.position(torch.arange(t, device=x.device))
        for block in self.blocks:
            h = block(h, src_mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


def windows(codes: np.ndarray, context: int, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-character targets, windows of ``context`` every ``context // 2``."""
    starts = np.arange(0, len(codes) - context - 1, context // 2)[:count]
    x = np.stack([codes[s:s + context] for s in starts])
    y = np.stack([codes[s + 1:s + context + 1] for s in starts])
    return x, y


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, model and training options both Shakespeare examples take."""
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--samples", type=int, default=None, help="training windows (all)")
    parser.add_argument("--generate", type=int, default=200, help="characters to sample")


def load(path: Path) -> tuple[str, list[str], np.ndarray, int]:
    """(text, vocabulary, the text as codes, where validation starts: the last 10%)."""
    text = path.read_text()
    chars = sorted(set(text))
    codes = np.array([chars.index(c) for c in text], dtype=np.int64)
    return text, chars, codes, int(len(codes) * 0.9)


def generate(model: mirrorfit.Model, prompt: np.ndarray, length: int, context: int,
             seed: int) -> list[int]:
    """Sample ``length`` characters (every worker calls predict: it is collective)."""
    rng = np.random.default_rng(seed)  # the same draws on every worker
    out = list(prompt)
    for _ in range(length):
        logits = model.predict(np.array([out[-context:]], dtype=np.int64), verbose=0)[0, -1]
        p = np.exp(logits - logits.max())
        out.append(int(rng.choice(len(p), p=p / p.sum())))
    return out[len(prompt):]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=None,
                        help="replicas (default: every GPU, else 2 CPU workers)")
    add_arguments(parser)
    args = parser.parse_args()

    devices = args.devices
    if devices is None:
        devices = None if mirrorfit.list_devices()[0].startswith("cuda") else 2
    strategy = mirrorfit.ShardedStrategy(devices=devices, wrap=[nn.TransformerEncoderLayer])
    text, chars, codes, split = load(args.data)
    x, y = windows(codes[:split], args.context, args.samples)
    x_val, y_val = windows(codes[split:], args.context, None)

    mirrorfit.set_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(CharTransformer(len(chars), args.context, args.width,
                                                args.depth, args.heads))
        model.compile(mirrorfit.optimizers.AdamW(learning_rate=3e-3),
                      mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    if strategy.is_chief:
        params = sum(p.numel() for p in model.module.parameters())
        print(f"{len(text):,} characters, vocabulary {len(chars)}, {params:,} parameters, "
              f"{strategy.num_replicas_in_sync} replica(s)")
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_val, y_val),
              verbose=2 if strategy.is_chief else 0)
    val_loss = model.evaluate(x_val, y_val, batch_size=128, verbose=0)
    sample = generate(model, codes[split:split + args.context], args.generate, args.context, 0)
    if strategy.is_chief:
        print(f"val loss: {val_loss:.3f} (a uniform guess: {np.log(len(chars)):.3f})")
        print("sample:", "".join(chars[i] for i in sample))


if __name__ == "__main__":
    main()
