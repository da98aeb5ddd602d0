"""Training throughput: daug's LoRA step vs the popular-tutorial recipe, side by side in one run.

Baseline (the widely copied self-llm / Alpaca-LoRA recipe): every example padded to 384 tokens,
batch size 1, the model's own forward computing logits at every position, fp32.
daug: length-grouped batches with dynamic padding, the LM head applied only where a reply token
is predicted (Gemma 3's 262k-word head is larger than its transformer body), fp32 and bf16.
Both train the same LoRA (q_proj, v_proj, r=8) on the same examples of the real base model,
interleaved batch by batch so that all recipes see the same (shared, noisy) machine load.

Prints real (non-padding) tokens/s, the speed-up (target >= 3x, exit 1 if missed) and the achieved
FLOP/s as a fraction of this machine's measured torch.matmul peak (fp32 and bf16).
Run: nice -n 10 python benchmarks/bench_train.py [--examples 16] [--base models/base]
Most of the run time is the baseline (20 min on the shared 2-core machine at load ~6).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daug.basemodel import load_tokenizer  # noqa: E402
from daug.io import read_records  # noqa: E402
from daug.training.data import IGNORE, Example, batch_schedule, collate, encode_records  # noqa: E402
from daug.approaches import get_approach  # noqa: E402
from daug.training.loop import trainable_model  # noqa: E402
from daug.training.loss import ReplyLoss, autocast  # noqa: E402

TARGET = 3.0
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    """Best-of FLOP/s of an n x n matmul: what this CPU's BLAS reaches at this moment."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_flops(model, tokens: int, head_rows: int) -> float:
    """Forward + backward FLOPs with a frozen base: 2 per weight per token forward, 2 backward (input
    grads only), attention ignored (sequences are short); the head counts only the rows computed."""
    lm = model.get_base_model()
    head = lm.get_output_embeddings().weight
    body = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n and "lora_" not in n)
    return 4.0 * body * tokens + 4.0 * head.numel() * head_rows


def pad_to(example: Example, length: int, pad_id: int) -> tuple:
    ids = example.input_ids[:length]
    labels = example.labels[:length]
    pad = length - len(ids)
    return (torch.tensor([ids + [pad_id] * pad]), torch.tensor([[1] * len(ids) + [0] * pad]),
            torch.tensor([labels + [IGNORE] * pad]))


class Recipe:
    """One way of training: its own model and optimizer; step(examples) trains on them, timed."""

    def __init__(self, base: str, precision: str, baseline: bool):
        self.model = trainable_model(base, {"dtype": "float32"}, get_approach("lora-qv", LORA), [], 0, precision,
                                     torch.device("cpu")).train()
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.loss_fn = ReplyLoss(self.model)
        self.precision, self.baseline = precision, baseline
        self.seconds, self.tokens, self.flops = 0.0, 0, 0.0

    def _update(self, loss) -> None:
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()

    def step(self, examples: list[Example], pad_id: int) -> None:
        start = time.perf_counter()
        if self.baseline:  # one example at a time, padded to 384, logits everywhere
            for e in examples:
                ids, mask, labels = pad_to(e, 384, pad_id)
                self._update(self.model(input_ids=ids, attention_mask=mask, labels=labels).loss)
                self.flops += step_flops(self.model, 384, 384)
        else:
            ids, mask, labels = collate(examples, pad_id)
            with autocast(self.precision):
                loss, n = self.loss_fn(ids, mask, labels)
            self._update(loss / n)
            self.flops += step_flops(self.model, ids.numel(), int(n))
        self.seconds += time.perf_counter() - start
        self.tokens += sum(len(e.input_ids) for e in examples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(REPO / "models/base"))
    parser.add_argument("--data", default=str(REPO / "data/raw/zhenhuan/huanhuan.json"))
    parser.add_argument("--examples", type=int, default=16, help="examples each recipe trains on")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")

    tokenizer = load_tokenizer(args.base)
    examples = encode_records(tokenizer, read_records(args.data)[:args.examples], SYSTEM, 384).examples
    pad_id = tokenizer.pad_token_id
    print(f"{len(examples)} examples, mean {sum(len(e.input_ids) for e in examples) / len(examples):.0f} tokens "
          f"({sum(e.reply_tokens for e in examples) / len(examples):.0f} reply)")

    recipes = {"baseline": Recipe(args.base, "float32", baseline=True),
               "daug fp32": Recipe(args.base, "float32", baseline=False),
               "daug bf16": Recipe(args.base, "bfloat16", baseline=False)}
    batches = batch_schedule([len(e.input_ids) for e in examples], args.batch_size,
                             len(examples) // args.batch_size, seed=0)  # daug's length-grouped batches
    for recipe in recipes.values():  # warm-up, not timed
        recipe.step([examples[i] for i in batches[0]][:2], pad_id)
        recipe.seconds, recipe.tokens, recipe.flops = 0.0, 0, 0.0
    for batch in batches:  # interleaved batch by batch: every recipe sees the same machine load
        for recipe in recipes.values():
            recipe.step([examples[i] for i in batch], pad_id)

    base_tps = recipes["baseline"].tokens / recipes["baseline"].seconds
    ok = True
    for name, r in recipes.items():
        tps = r.tokens / r.seconds
        ratio = tps / base_tps
        achieved = r.flops / r.seconds
        print(f"{name:10s} {tps:8.1f} real tokens/s  {ratio:5.2f}x baseline  {achieved / 1e9:7.1f} GFLOP/s "
              f"= {achieved / peak[r.precision]:.1%} of {r.precision} peak")
        ok = ok and (r.baseline or ratio >= TARGET)
    best = max(r.tokens / r.seconds for r in recipes.values() if not r.baseline) / base_tps
    print(f"speed-up (best daug / baseline): {best:.2f}x (target >= {TARGET}x): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
