"""Research measurement for issue 21 (cost per run): how much of the per-example test loss is the
262k-token LM head, and what scoring over only the tokens the study's data use would save.

Side by side in one process, on the first N Zhen Huan test records (bf16, as the cpu profile
evaluates), the base model alone (no adapter: the head's cost does not depend on one):
  full     daug's fast reply-only loss (daug.training.loss.ReplyLoss.per_example), 262,144 logits
  trimmed  the same hidden states, logits over the vocabulary the prepared splits use (plus the
           special tokens), i.e. a model whose head is cut to those rows: a different model
           (its softmax normalises over fewer tokens), so its losses are printed beside the full ones
  body     the decoder stack alone (what neither variant can save)

Run: python docs/research/bench_vocab_trim.py [--n 96] [--repeats 3]   (needs models/base and
data/prepared/{zhenhuan,paimon}: `python -m daug base-model`, `python -m daug prepare`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from daug.basemodel import load_model, load_tokenizer  # noqa: E402
from daug.io import read_records  # noqa: E402
from daug.training.data import collate, encode_records  # noqa: E402
from daug.training.loss import ReplyLoss, autocast  # noqa: E402

SYSTEM = "现在你要扮演皇帝身边的女人--甄嬛"


def used_vocabulary(tokenizer) -> torch.Tensor:
    from daug.chat import messages, prompt_text

    ids = set(tokenizer.all_special_ids)
    for ds, system in (("zhenhuan", SYSTEM), ("paimon", "现在你要扮演《原神》中旅行者的伙伴和向导--派蒙")):
        for split in ("train", "val", "test"):
            for r in read_records(REPO / f"data/prepared/{ds}/{split}.jsonl"):
                text = prompt_text(tokenizer, messages(r, system)) + r["output"]
                ids.update(tokenizer(text, add_special_tokens=True)["input_ids"])
    ids.update(tokenizer.convert_tokens_to_ids(["<end_of_turn>", "<start_of_turn>"]))
    return torch.tensor(sorted(ids))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(REPO / "models/base")
    model = load_model(REPO / "models/base", "float32").to(torch.bfloat16).eval()
    loss_fn = ReplyLoss(model)
    vocab = used_vocabulary(tokenizer)
    remap = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    head_rows = loss_fn.head.weight[vocab]
    encoded = encode_records(tokenizer, read_records(REPO / "data/prepared/zhenhuan/test.jsonl")[:args.n], SYSTEM, 256)
    examples = sorted(encoded.examples, key=lambda e: len(e.input_ids))
    batches = [collate(examples[i:i + 32], tokenizer.pad_token_id) for i in range(0, len(examples), 32)]
    softcap = loss_fn.softcap

    def body_only():
        for ids, mask, labels in batches:
            loss_fn._reply_positions(ids, mask, labels)

    def full():
        out = []
        for ids, mask, labels in batches:
            out.append(loss_fn.per_example(ids, mask, labels)[0])
        return torch.cat(out)

    def trimmed():
        out = []
        for ids, mask, labels in batches:
            hidden, targets, keep = loss_fn._reply_positions(ids, mask, labels)
            logits = (hidden @ head_rows.T).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            nll = -torch.log_softmax(logits, -1).gather(1, remap[targets][:, None])[:, 0]
            sums = torch.zeros(keep.shape[0], dtype=torch.float64).index_add_(0, keep.nonzero()[:, 0], nll.double())
            out.append(sums)
        return torch.cat(out)

    times = {}
    with torch.inference_mode(), autocast("bfloat16"):
        full(), trimmed()  # warm-up
        for name, fn in (("body", body_only), ("full", full), ("trimmed", trimmed)):
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = fn()
                best = min(best, time.perf_counter() - start)
            times[name] = (best, result)
    tokens = sum(int((labels[:, 1:] != -100).sum()) for _, _, labels in batches)
    print(f"{len(examples)} test examples, {tokens} reply tokens, vocabulary used {len(vocab)} of {model.config.vocab_size}; "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    for name in ("body", "full", "trimmed"):
        print(f"{name:8s} {times[name][0]:7.2f} s")
    print(f"head share of the full loss: {1 - times['body'][0] / times['full'][0]:.2f}; "
          f"trimmed / full: {times['trimmed'][0] / times['full'][0]:.2f}")
    full_mean = (times["full"][1].sum() / tokens).item()
    trim_mean = (times["trimmed"][1].sum() / tokens).item()
    print(f"mean loss per reply token: full {full_mean:.4f}, trimmed {trim_mean:.4f} (the trimmed model's own)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
