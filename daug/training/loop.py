"""The training loop: LoRA via peft, a fixed budget, checkpoints that resume exactly, distributed.

One optimizer step sees `batch_size` examples (the global batch, whatever the number of processes),
split over processes and then into micro-batches of `micro_batch_size`. Each process knows the whole
batch schedule, so it normalises its summed token losses by the global number of reply tokens: the
gradient is then the same as one process computing the mean over the whole batch.

Checkpoints live outside DVC's outputs (DVC deletes those before a stage re-runs) and carry a
fingerprint of everything that determines the result; a checkpoint with another fingerprint is
never resumed. A checkpoint holds the adapter weights, optimizer and scheduler state, the RNG state
of every process and the loss log, so a resumed run continues the same curve to the same adapter.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from daug import DaugError
from daug.io import read_json, write_json
from daug.training.data import Encoded, batch_schedule, collate, micro_batches
from daug.training.loss import ReplyLoss, autocast


@dataclass
class TrainConfig:
    """params.yaml `train`: the budget every method gets."""
    steps: int = 60
    batch_size: int = 8             # examples per optimizer step (global, over all processes)
    micro_batch_size: int = 0       # examples per forward pass; 0 = the whole (per-process) batch
    learning_rate: float = 2e-4
    warmup_steps: int = 0           # linear warm-up, then linear decay to 0 at `steps`
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256           # tokens per example (prompt + reply); longer replies are cut
    log_every: int = 5              # train loss rows: the mean over the last log_every steps
    eval_every: int = 20            # validation loss rows (also at step 0 and at the last step)
    val_examples: int = 64          # the first N validation records (the split is already random)
    checkpoint_every: int = 0       # 0 = at each evaluation
    precision: str = "fp32"         # fp32 | bf16 (autocast; frozen weights stored in bf16)

    @classmethod
    def from_params(cls, train: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(train) - known)
        if unknown:
            raise DaugError(f"params train: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        cfg = cls(**train)
        if cfg.precision not in ("fp32", "bf16"):
            raise DaugError(f"params train.precision: {cfg.precision!r}, expected fp32 or bf16")
        if min(cfg.steps, cfg.batch_size, cfg.max_length, cfg.log_every, cfg.eval_every) < 1:
            raise DaugError("params train: steps, batch_size, max_length, log_every and eval_every must be >= 1")
        return cfg


# --- processes, seeds, model ------------------------------------------------------------------------

def dist_info() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed under torchrun / accelerate launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def device_for(rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lora_model(base_dir, model_params: dict, lora: dict, seed: int, precision: str, device):
    """The base model with fresh LoRA adapters; seeded right before get_peft_model (LoRA init)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from daug.basemodel import load_model

    four_bit = bool(model_params.get("load_in_4bit"))
    dtype = "bfloat16" if precision == "bf16" and not four_bit else model_params.get("dtype", "float32")
    model = load_model(base_dir, dtype=dtype, load_in_4bit=four_bit,
                       **({"device_map": {"": device.index or 0}} if four_bit else {}))
    if four_bit:  # QLoRA: fp32 norms, input grads for checkpointing through frozen 4-bit layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.to(device)
    seed_everything(seed)
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=list(lora["target_modules"]), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    for p in model.parameters():  # adapters train in fp32 even over a bf16 base
        if p.requires_grad:
            p.data = p.data.float()
    return model


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


# --- checkpoints -------------------------------------------------------------------------------------

LATEST = "latest.json"


def load_checkpoint(run_dir: Path, fingerprint: str) -> dict | None:
    """The newest complete checkpoint with this fingerprint, or None (absent or stale)."""
    latest = run_dir / LATEST
    if not latest.exists():
        return None
    info = read_json(latest)
    ckpt = run_dir / info["dir"]
    if info.get("fingerprint") != fingerprint or not ckpt.is_dir():
        return None
    from safetensors.torch import load_file

    state = torch.load(ckpt / "state.pt", weights_only=True)
    return {**read_json(ckpt / "progress.json"), "weights": load_file(ckpt / "adapter.safetensors"), **state}


def save_checkpoint(run_dir: Path, fingerprint: str, step: int, model, optimizer, scheduler,
                    progress: dict, rng_states: list) -> Path:
    """Write step-NNNNNN/ completely, then point latest.json at it (atomic), then prune older ones."""
    from safetensors.torch import save_file

    name = f"step-{step:06d}"
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "adapter.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states},
               tmp / "state.pt")
    write_json(tmp / "progress.json", progress)
    final = run_dir / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_json(run_dir / LATEST, {"dir": name, "step": step, "fingerprint": fingerprint})
    for old in run_dir.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _rng_state(device) -> dict:
    """The generators dropout draws from: a resumed run continues the same random stream."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.tolist()


# --- the loop ----------------------------------------------------------------------------------------

def _loss_sums(loss_fn, examples, pad_id, device, batch_size, precision) -> tuple[float, int]:
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        ids, mask, labels = (t.to(device) for t in collate(examples[start:start + batch_size], pad_id))
        with autocast(precision):
            loss, n = loss_fn(ids, mask, labels)
        total, count = total + loss.item(), count + int(n)
    return total, count


def evaluate(model, loss_fn, val: Encoded, pad_id, device, cfg: TrainConfig, rank: int, world: int) -> float:
    """Validation loss per reply token, each process scoring its share of the examples."""
    examples = sorted(val.examples, key=lambda e: len(e.input_ids))[rank::world]
    model.eval()
    with torch.no_grad():
        total, count = _loss_sums(loss_fn, examples, pad_id, device, cfg.micro_batch_size or cfg.batch_size, cfg.precision)
    model.train()
    total, count = _all_sum([total, float(count)], world)
    return total / count if count else float("nan")


def train_loop(model, tokenizer, train: Encoded, val: Encoded, cfg: TrainConfig, seed: int, run_dir: Path,
               fingerprint: str, rank: int = 0, world: int = 1, device=torch.device("cpu")) -> dict:
    """Train `model` (a peft model) in place. Returns the loss log and counters; resumes from run_dir."""
    if cfg.batch_size < world:
        raise DaugError(f"train.batch_size {cfg.batch_size} is smaller than the number of processes {world}")
    run_dir = Path(run_dir)
    examples = train.examples
    schedule = batch_schedule([len(e.input_ids) for e in examples], cfg.batch_size, cfg.steps, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warm = max(cfg.warmup_steps, 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm)))
    loss_fn = ReplyLoss(model)
    step_fn = loss_fn
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_fn = torch.nn.parallel.DistributedDataParallel(loss_fn, device_ids=ids)
    pad_id = tokenizer.pad_token_id
    every_ckpt = cfg.checkpoint_every or cfg.eval_every

    progress = {"step": 0, "log": [], "seconds": 0.0, "eval_seconds": 0.0, "tokens": 0, "reply_tokens": 0,
                "padded_tokens": 0, "resumed_from": [],
                "window": [0.0, 0.0]}  # loss sum and reply tokens since the last train row
    ckpt = load_checkpoint(run_dir, fingerprint)
    if ckpt is not None:
        with torch.no_grad():
            named = dict(model.named_parameters())
            for name, tensor in ckpt["weights"].items():
                named[name].copy_(tensor)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"][rank], device)
        progress = {k: ckpt[k] for k in progress}
        progress["resumed_from"] = progress["resumed_from"] + [progress["step"]]
    log = progress["log"]

    def validate(step: int) -> None:
        started = time.perf_counter()
        log.append({"step": step, "split": "val", "loss": evaluate(model, loss_fn, val, pad_id, device, cfg, rank, world)})
        progress["eval_seconds"] += time.perf_counter() - started

    if progress["step"] == 0 and not log:
        validate(0)

    model.train()
    bar = tqdm(total=cfg.steps, initial=progress["step"], desc="train", disable=rank != 0)
    for step in range(progress["step"] + 1, cfg.steps + 1):
        started = time.perf_counter()
        batch = [examples[i] for i in schedule[step - 1]]
        global_reply = sum(e.reply_tokens for e in batch)
        mine = batch[rank::world]
        micros = micro_batches(mine, cfg.micro_batch_size or len(mine))
        loss_sum, padded = 0.0, 0
        for k, micro in enumerate(micros):
            ids, mask, labels = (t.to(device) for t in collate(micro, pad_id))
            sync = world == 1 or k == len(micros) - 1
            with (contextlib.nullcontext() if sync else step_fn.no_sync()), autocast(cfg.precision):
                loss, _ = step_fn(ids, mask, labels)
                # DDP averages gradients over processes: scale so the result is the global token mean
                (loss * (world / global_reply)).backward()
            loss_sum += loss.item()
            padded += ids.numel()
        loss_sum, padded = _all_sum([loss_sum, float(padded)], world)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if not (math.isfinite(loss_sum) and torch.isfinite(grad_norm)):
            latest = read_json(run_dir / LATEST) if (run_dir / LATEST).exists() else None
            kept = f"last good checkpoint: {run_dir / latest['dir']} (step {latest['step']})" if latest else "no checkpoint yet"
            bar.close()
            raise DaugError(f"step {step}: training loss is {loss_sum / global_reply:.4g} and gradient norm "
                            f"{float(grad_norm):.4g}; stopped ({kept}). Lower train.learning_rate or check the data")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        progress["step"] = step
        progress["seconds"] += time.perf_counter() - started
        progress["tokens"] += sum(len(e.input_ids) for e in batch)
        progress["reply_tokens"] += global_reply
        progress["padded_tokens"] += int(padded)
        window = progress["window"] = [progress["window"][0] + loss_sum, progress["window"][1] + global_reply]
        if step % cfg.log_every == 0 or step == cfg.steps:
            log.append({"step": step, "split": "train", "loss": window[0] / window[1]})
            progress["window"] = [0.0, 0.0]
        if step % cfg.eval_every == 0 or step == cfg.steps:
            validate(step)
        if step % every_ckpt == 0 or step == cfg.steps:
            rngs = _gather(_rng_state(device), world)
            if rank == 0:
                save_checkpoint(run_dir, fingerprint, step, model, optimizer, scheduler, progress, rngs)
            if world > 1:
                torch.distributed.barrier()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / global_reply:.3f}")
    bar.close()
    return progress
