"""Per-step time of LoRA q/v vs LoRA q/v + TrainableTokens(<end_of_turn>, <start_of_turn>) through daug's
fast ReplyLoss, interleaved in one process on the same batches (so machine load hits both alike).
Also peft's own forward path (model(...).logits + full CE) for reference on 2 steps."""
import statistics, time, torch
from daug.basemodel import load_tokenizer
from daug.io import read_records
from daug.training.data import batch_schedule, collate, encode_records
from daug.training.loop import lora_model
from daug.training.loss import ReplyLoss, autocast
torch.set_num_threads(2)
tok = load_tokenizer("models/base"); sp = "现在你要扮演皇帝身边的女人--甄嬛"
train = encode_records(tok, read_records("data/prepared/zhenhuan/train.jsonl")[:80], sp, 256)
sched = batch_schedule([len(e.input_ids) for e in train.examples], 8, 12, 0)
base = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
models = {"lora": lora_model("models/base", {"dtype": "float32"}, base, 0, "bf16", torch.device("cpu")),
          "lora+tt": lora_model("models/base", {"dtype": "float32"}, {**base, "trainable_tokens": ["<end_of_turn>", "<start_of_turn>"]}, 0, "bf16", torch.device("cpu"))}
times = {k: [] for k in models}
for step in range(12):
    ids, mask, labels = collate([train.examples[i] for i in sched[step]], tok.pad_token_id)
    for name, m in models.items():
        fn = ReplyLoss(m); t = time.perf_counter()
        with autocast("bf16"):
            loss, n = fn(ids, mask, labels); (loss / n).backward()
        m.zero_grad(set_to_none=True); times[name].append(time.perf_counter() - t)
for k, v in times.items(): print(f"{k}: median {statistics.median(v[2:]):.3f} s/step (fwd+bwd, steps 3-12)")
print(f"ratio lora+tt / lora: {statistics.median(times['lora+tt'][2:]) / statistics.median(times['lora'][2:]):.3f}")
