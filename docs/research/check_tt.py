"""Check: daug's fast reply loss with peft TrainableTokens equals HF's full causal-LM loss (value and
gradients of LoRA and the trained token rows); save / PeftModel.from_pretrained / merge_and_unload keep
the trained rows in both the embedding and the tied head."""
import copy, sys, tempfile, torch
from daug.training.loop import lora_model
from daug.training.loss import ReplyLoss
from daug.training.data import encode_records, collate
from daug.basemodel import load_tokenizer, load_model
from daug.io import read_records
torch.manual_seed(0)
tok = load_tokenizer("models/base")
lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "trainable_tokens": ["<end_of_turn>", "<start_of_turn>"]}
model = lora_model("models/base", {"dtype": "float32"}, lora, 0, "fp32", torch.device("cpu"))
print(type(model.get_input_embeddings()).__name__, type(model.get_output_embeddings()).__name__)
with torch.no_grad():  # move the rows and LoRA B so the check is not at the init
    for n, p in model.named_parameters():
        if p.requires_grad: p.add_(torch.randn_like(p) * 0.02)
recs = read_records("data/prepared/zhenhuan/val.jsonl")[:3]
enc = encode_records(tok, recs, "现在你要扮演皇帝身边的女人--甄嬛", 256)
ids, mask, labels = collate(enc.examples, tok.pad_token_id)
trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
print("trainable:", [(n, tuple(p.shape)) for n, p in trainable if "lora" not in n])
loss, n = ReplyLoss(model)(ids, mask, labels)
loss.backward()
g_fast = {k: p.grad.clone() for k, p in trainable}
model.zero_grad()
out = model(input_ids=ids, attention_mask=mask)
logits = out.logits[:, :-1].float()
ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")
ref.backward()
print("loss fast", loss.item(), "hf", ref.item(), "n", int(n))
worst = max((g_fast[k] - p.grad).abs().max().item() / (p.grad.abs().max().item() + 1e-12) for k, p in trainable)
for k, p in trainable:
    if "lora" not in k: print(k, "rel grad err", ((g_fast[k] - p.grad).abs().max() / p.grad.abs().max()).item())
print("worst relative grad error", worst)
d = tempfile.mkdtemp()
model.save_pretrained(d, safe_serialization=True)
import os, json; print(os.listdir(d)); from safetensors.torch import load_file; print({k: tuple(v.shape) for k, v in load_file(d + "/adapter_model.safetensors").items() if "lora" not in k})
from peft import PeftModel
rows = dict(model.named_parameters())[[k for k, _ in trainable if "trainable_tokens" in k][0]].detach().clone()
m2 = PeftModel.from_pretrained(load_model("models/base"), d).merge_and_unload()
E, H = m2.get_input_embeddings().weight, m2.get_output_embeddings().weight
print("tied after merge:", E.data_ptr() == H.data_ptr(), "rows in embed:", torch.allclose(E[[106, 105]], rows), "rows in head:", torch.allclose(H[[106, 105]], rows))
m2.eval(); model.eval()
with torch.no_grad():
    a = m2(input_ids=ids, attention_mask=mask).logits; b = model(input_ids=ids, attention_mask=mask).logits
print("merged vs peft logits max diff", (a - b).abs().max().item())
