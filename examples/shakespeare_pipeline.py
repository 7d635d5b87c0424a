"""A character-level transformer on Tiny Shakespeare, cut into 2 pipeline stages.

    python examples/shakespeare_pipeline.py                      # 2 stages, 2 CPU workers
    python examples/shakespeare_pipeline.py --schedule 1f1b --microbatches 8
    python examples/shakespeare_pipeline.py --data input.txt --width 384 --depth 6

The model of ``shakespeare_sharded.py`` written as an ``nn.Sequential`` (embeddings,
causal blocks, norm, head), which ``PipelineStrategy`` cuts where the two stages'
parameter counts are most even; each worker keeps its stage only. The default text
is the first 100,000 characters of Tiny Shakespeare shipped in ``examples/data``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from shakespeare_sharded import add_arguments, generate, load, windows  # this folder
from torch import nn

import mirrorfit


class Embed(nn.Module):
    """Token plus position embeddings: (batch, time) codes -> (batch, time, width)."""

    def __init__(self, vocab: int, context: int, width: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token(x) + self.position(torch.arange(x.shape[1], device=x.device))


class CausalBlock(nn.Module):
    """A pre-norm transformer block that sees only earlier characters."""

    def __init__(self, width: int, heads: int, context: int) -> None:
        super().__init__()
        self.block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context),
                             persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        t = h.shape[1]
        return self.block(h, src_mask=self.mask[:t, :t], is_causal=True)


def char_transformer(vocab: int, context: int, width: int, depth: int,
                     heads: int) -> nn.Sequential:
    return nn.Sequential(Embed(vocab, context, width),
                         *(CausalBlock(width, heads, context) for _ in range(depth)),
                         nn.LayerNorm(width), nn.Linear(width, vocab))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedule", default="gpipe", choices=["gpipe", "1f1b"])
    parser.add_argument("--microbatches", type=int, default=4)
    add_arguments(parser)
    args = parser.parse_args()

    strategy = mirrorfit.PipelineStrategy(stages=2, microbatches=args.microbatches,
                                          schedule=args.schedule)
    text, chars, codes, split = load(args.data)
    x, y = windows(codes[:split], args.context, args.samples)
    x_val, y_val = windows(codes[split:], args.context, None)

    mirrorfit.set_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(char_transformer(len(chars), args.context, args.width,
                                                 args.depth, args.heads))
        model.compile(mirrorfit.optimizers.AdamW(learning_rate=3e-3),
                      mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    mine = sum(p.numel() for p in model.module.parameters() if not p.is_meta)
    counts = strategy.all_gather_object(mine)
    if strategy.is_chief:
        print(f"{len(text):,} characters, vocabulary {len(chars)}, {sum(counts):,} parameters, "
              f"stages of {' + '.join(f'{c:,}' for c in counts)}")
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, validation_data=(x_val, y_val),
              verbose=2 if strategy.is_chief else 0)
    val_loss = model.evaluate(x_val, y_val, batch_size=128, verbose=0)
    sample = generate(model, codes[split:split + args.context], args.generate, args.context, 0)
    if strategy.is_chief:
        print(f"val loss: {val_loss:.3f} (a uniform guess: {np.log(len(chars)):.3f})")
        print("sample:", "".join(chars[i] for i in sample))


if __name__ == "__main__":
    main()
