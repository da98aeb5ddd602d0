"""The training loop: any approach of daug/approaches/ (LoRA via peft, ...), the best validation
state kept (optional early stopping), checkpoints that resume exactly, distributed.

The run validates at step 0 (the base model) and every `eval_every` steps on the same records with
THE per-example loss (loss.example_losses); it keeps the adapter state of the lowest mean loss per
reply token and stops when `patience` evaluations in a row bring no new best, or at `steps` (the
maximum, the same for every method; with `patience: null`, always at `steps`). The best state is
restored before the adapter is saved.

One optimizer step sees `batch_size` examples (the global batch, whatever the number of processes),
split over processes and then into micro-batches of `micro_batch_size`. Each process knows the whole
batch schedule, so it normalises its summed token losses by the global number of reply tokens: the
gradient is then the same as one process computing the mean over the whole batch.

Checkpoints live outside DVC's outputs (DVC deletes those before a stage re-runs) and carry a
fingerprint of everything that determines the result; a checkpoint with another fingerprint is
never resumed. A checkpoint holds the adapter weights, the best state so far, optimizer and
scheduler state, the RNG state of every process, the loss log and the early-stopping counters, so a
resumed run continues the same curve, stops at the same step and saves the same adapter.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook

from daug import DaugError
from daug.io import read_json, write_json
from daug.training.data import Encoded, Example, batch_schedule, collate, micro_batches
from daug.training.loss import PRECISIONS, ReplyLoss, autocast, example_losses, mean_loss, shared_prefix


PASSES = ("source", "record")  # train.passes: one example per source dialogue per pass, or every record


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml `train`: the budget every method gets. The defaults and the meaning of each
    key live in params/base.yaml (`train`); this is their typed, checked form."""
    steps: int
    batch_size: int           # examples per optimizer step (global, over all processes)
    micro_batch_size: int     # examples per forward pass; 0 = the whole (per-process) batch
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    max_length: int
    log_every: int
    eval_every: int
    patience: int | None      # evaluations without a new best validation loss before stopping; None: never stop early
    val_examples: int
    checkpoint_every: int     # 0 = at each evaluation
    precision: str            # float32 | bfloat16 (frozen weights in bfloat16 + autocast)
    seeds: list               # the training seeds: one adapter each (weight init, dropout, batch order)
    passes: str               # what a pass over the data covers: "source" | "record" (daug.training.data.batch_schedule)
    trainable_tokens: list    # embedding rows that train too, where the approach can (daug/approaches/)

    @classmethod
    def from_params(cls, train: dict) -> "TrainConfig":
        """From a params `train` section (base.yaml's defaults filled in, unknown keys rejected)."""
        from daug.params import integer, number, one_of, require, section, training_seeds

        resolved = section({"train": train}, "train", "params train")
        resolved.pop("seeds_by_dataset")  # `seeds` already holds the run's dataset's (daug.runs.train_params)
        if resolved.pop("learning_rate_scale", 1.0) != 1.0:  # daug.runs.train_params folds it into learning_rate
            raise DaugError("params train.learning_rate_scale: a run's train section has it folded into "
                            "learning_rate (daug.runs.train_params)")
        cfg = cls(**resolved)
        positive = integer(1)
        require("train", vars(cfg), {
            "precision": one_of(*PRECISIONS), "passes": one_of(*PASSES), "steps": positive, "batch_size": positive,
            "micro_batch_size": integer(0), "max_length": positive, "log_every": positive, "eval_every": positive,
            "patience": (lambda v: v is None or positive[0](v), "an integer >= 1, or null for no early stopping"),
            "val_examples": positive, "checkpoint_every": integer(0), "warmup_steps": integer(0),
            "learning_rate": number(0, open_low=True), "weight_decay": number(0), "max_grad_norm": number(0, open_low=True)},
            hints={"fp32": "the old spelling of 'float32'", "bf16": "the old spelling of 'bfloat16'"})
        training_seeds({"train": {"seeds": cfg.seeds}})
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


def trainable_token_ids(tokenizer, names: list[str], source: str) -> list[int]:
    """Vocabulary ids of `train.trainable_tokens`; DaugError for a string that is not one token."""
    ids = []
    for name in names:
        tid = tokenizer.convert_tokens_to_ids(name) if isinstance(name, str) else None
        if not isinstance(tid, int) or tid == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(tid) != name:
            raise DaugError(f"params train.trainable_tokens: {name!r} is not a token of the tokenizer in {source}")
        ids.append(tid)
    return ids


def trainable_model(base_dir, model_params: dict, approach, trainable_tokens: list[str], seed: int, precision: str,
                    device, tokenizer=None):
    """The base model wrapped by `approach` (daug/approaches/) for training, with the embedding rows
    of `trainable_tokens` trainable where the approach can train them (checked before the model
    loads); seeded right before the approach initialises its weights. `tokenizer`: the base
    model's, if already loaded (Gemma's takes ~4 s to load)."""
    from daug.basemodel import load_model, load_tokenizer  # first: it quiets bitsandbytes' import (peft's)
    from daug.vocabulary import attach_saved
    from peft import prepare_model_for_kbit_training

    names = list(trainable_tokens or [])
    tokens = trainable_token_ids(tokenizer or load_tokenizer(base_dir), names, str(base_dir)) if names else []
    approach.check_token_rows(tokens)
    four_bit = bool(model_params.get("load_in_4bit"))
    dtype = "bfloat16" if precision == "bfloat16" and not four_bit else model_params.get("dtype", "float32")
    # 4-bit: the whole model on this process's device (quantised as it loads; bitsandbytes runs on CPU too)
    place = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
    model = load_model(base_dir, dtype=dtype, load_in_4bit=four_bit, **({"device_map": place} if four_bit else {}))
    if four_bit:  # QLoRA: fp32 norms, input grads for checkpointing through frozen 4-bit layers
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.to(device)
    seed_everything(seed)
    model = approach.wrap(model, tokens)
    for p in model.parameters():  # trained weights stay fp32 even over a bf16 base
        if p.requires_grad:
            p.data = p.data.float()
    return attach_saved(model, base_dir)  # params model.vocabulary (daug/vocabulary.py)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    """Copy a `trainable_state` back into the model (resume, or restoring the best state)."""
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, tensor in state.items():
            named[name].copy_(tensor)


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
    return {**read_json(ckpt / "progress.json"), "weights": load_file(ckpt / "adapter.safetensors"),
            "best_weights": load_file(ckpt / "best.safetensors"), **state}


def save_checkpoint(run_dir: Path, fingerprint: str, step: int, model, optimizer, scheduler,
                    progress: dict, rng_states: list, best_state: dict) -> Path:
    """Write step-NNNNNN/ completely, then point latest.json at it (atomic), then prune older ones."""
    from safetensors.torch import save_file

    name = f"step-{step:06d}"
    tmp = run_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "adapter.safetensors")
    save_file(best_state, tmp / "best.safetensors")
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

def make_optimizer(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (one seam: tests swap in SGD, whose update is linear in the
    gradient, to compare trajectories that Adam's division by the gradient's size would amplify)."""
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def schedule(train: Encoded, cfg: TrainConfig, seed: int) -> list[list[int]]:
    """The run's batches (indices into train.examples), for every step up to the maximum."""
    return batch_schedule([len(e.input_ids) for e in train.examples], cfg.batch_size, cfg.steps, seed,
                          sources=train.sources if cfg.passes == "source" else None)


def evaluate(model, loss_fn, val: Encoded, pad_id, cfg: TrainConfig, rank: int, world: int) -> list[list]:
    """Each validation example's [summed loss, reply tokens], in val.examples order; each process
    scores its share of the length-sorted examples and all processes get every result."""
    order = sorted(range(len(val.examples)), key=lambda i: len(val.examples[i].input_ids))[rank::world]
    losses = example_losses(model, [val.examples[i] for i in order], pad_id, cfg.micro_batch_size or cfg.batch_size,
                            precision=cfg.precision, loss_fn=loss_fn)
    out: list = [None] * len(val.examples)
    for share in _gather([(i, e.loss, e.tokens) for i, e in zip(order, losses)], world):
        for i, loss, tokens in share:
            out[i] = [loss, tokens]
    return out


def val_mean(per_example: list[list]) -> float:
    """Mean loss per reply token of `evaluate`'s result (an exact sum: order-independent)."""
    return mean_loss(math.fsum(loss for loss, _ in per_example), sum(tokens for _, tokens in per_example))


def new_progress() -> dict:
    """What a checkpoint carries besides weights and optimizer state; the loss log and counters."""
    return {"step": 0, "log": [], "seconds": 0.0, "eval_seconds": 0.0, "tokens": 0, "reply_tokens": 0,
            "padded_tokens": 0, "resumed_from": [],
            "window": [0.0, 0.0],  # loss sum and reply tokens since the last train row
            "best_step": None, "best_loss": None, "since_best": 0, "stopped_early": False,
            "val_best": None, "val_last": None,  # per-example [loss, tokens] at the best / last evaluation
            "val_initial": None}


class _Run:
    """One training run: the model, its optimizer and schedule, and the progress it has made."""

    def __init__(self, model, tokenizer, train: Encoded, val: Encoded, cfg: TrainConfig, seed: int,
                 run_dir: Path, fingerprint: str, rank: int, world: int, device, approach=None):
        if cfg.batch_size < world:
            raise DaugError(f"train.batch_size {cfg.batch_size} is smaller than the number of processes {world}")
        self.model, self.val, self.cfg = model, val, cfg
        self.run_dir, self.fingerprint = Path(run_dir), fingerprint
        self.rank, self.world, self.device = rank, world, device
        self.examples = train.examples
        self.prefix = shared_prefix(train.examples)  # the chat template and system prompt: run once per batch
        self.schedule = schedule(train, cfg, seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        warm, steps = max(cfg.warmup_steps, 0), cfg.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
        self.loss_fn = ReplyLoss(model, approach)
        self.step_fn = self.loss_fn
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.step_fn = torch.nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=ids)
        self.pad_id = tokenizer.pad_token_id
        self.progress = new_progress()
        self.best_state = trainable_state(model)

    def resume(self) -> None:
        """Continue from the run's checkpoint when its fingerprint matches (weights, optimizer, RNG, log)."""
        ckpt = load_checkpoint(self.run_dir, self.fingerprint)
        if ckpt is None:
            return
        load_trainable_state(self.model, ckpt["weights"])
        self.best_state = ckpt["best_weights"]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"][self.rank], self.device)
        self.progress = {k: ckpt[k] for k in self.progress}
        self.progress["resumed_from"] = self.progress["resumed_from"] + [self.progress["step"]]

    def validate(self, step: int, known: list | None = None) -> bool:
        """Score the validation records (or take `known`, their per-example scores already computed for
        this very model); keep the state if it is a new best. True: time to stop (`patience`
        evaluations in a row without a new best)."""
        started = time.perf_counter()
        progress = self.progress
        per_example = known if known is not None else evaluate(self.model, self.loss_fn, self.val, self.pad_id,
                                                               self.cfg, self.rank, self.world)
        loss = val_mean(per_example)
        progress["log"].append({"step": step, "split": "val", "loss": loss})
        progress["val_last"] = per_example
        if progress["best_step"] is None or (math.isfinite(loss) and not loss >= progress["best_loss"]):
            progress.update(best_step=step, best_loss=loss, since_best=0, val_best=per_example)
            self.best_state = trainable_state(self.model)
        else:
            progress["since_best"] += 1
        progress["eval_seconds"] += time.perf_counter() - started
        return self.cfg.patience is not None and progress["since_best"] >= self.cfg.patience

    def step(self, step: int, batch: list[Example]) -> tuple[float, int]:
        """One optimizer step on `batch` (this process takes its share): (global loss sum, padded tokens)."""
        global_reply = sum(e.reply_tokens for e in batch)
        mine = batch[self.rank::self.world]
        micros = micro_batches(mine, self.cfg.micro_batch_size or len(mine))
        loss_sum, padded = 0.0, 0
        for k, micro in enumerate(micros):
            ids, mask, labels = (t.to(self.device) for t in collate(micro, self.pad_id))
            sync = self.world == 1 or k == len(micros) - 1
            with (contextlib.nullcontext() if sync else self.step_fn.no_sync()), autocast(self.cfg.precision):
                loss, _ = self.step_fn(ids, mask, labels, self.prefix)
                # DDP averages gradients over processes: scale so the result is the global token mean
                (loss * (self.world / global_reply)).backward()
            loss_sum += loss.item()
            padded += ids.numel()
        loss_sum, padded = _all_sum([loss_sum, float(padded)], self.world)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if not (math.isfinite(loss_sum) and torch.isfinite(grad_norm)):
            raise self._diverged(step, loss_sum / global_reply, float(grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, int(padded)

    def _diverged(self, step: int, loss: float, grad_norm: float) -> DaugError:
        latest = read_json(self.run_dir / LATEST) if (self.run_dir / LATEST).exists() else None
        kept = (f"last good checkpoint: {self.run_dir / latest['dir']} (step {latest['step']})" if latest
                else "no checkpoint yet")
        return DaugError(f"step {step}: training loss is {loss:.4g} and gradient norm {grad_norm:.4g}; "
                         f"stopped ({kept}). Lower train.learning_rate or check the data")

    def record(self, step: int, seconds: float, batch: list[Example], loss_sum: float, padded: int) -> None:
        """Count the step; add a train-loss row every log_every steps (and at the last)."""
        progress, cfg = self.progress, self.cfg
        global_reply = sum(e.reply_tokens for e in batch)
        progress["step"] = step
        progress["seconds"] += seconds
        progress["tokens"] += sum(len(e.input_ids) for e in batch)
        progress["reply_tokens"] += global_reply
        progress["padded_tokens"] += padded
        progress["window"] = [progress["window"][0] + loss_sum, progress["window"][1] + global_reply]
        if step % cfg.log_every == 0 or step == cfg.steps:
            self.flush_train_row(step)

    def flush_train_row(self, step: int) -> None:
        """The mean train loss since the last train row, as a row at `step` (if any step is pending)."""
        loss_sum, tokens = self.progress["window"]
        if tokens:
            self.progress["log"].append({"step": step, "split": "train", "loss": loss_sum / tokens})
        self.progress["window"] = [0.0, 0.0]

    def checkpoint(self, step: int) -> None:
        """Every process's RNG state to rank 0, which writes the checkpoint; the others wait."""
        rngs = _gather(_rng_state(self.device), self.world)
        if self.rank == 0:
            save_checkpoint(self.run_dir, self.fingerprint, step, self.model, self.optimizer, self.scheduler,
                            self.progress, rngs, self.best_state)
        if self.world > 1:
            torch.distributed.barrier()


def train_loop(model, tokenizer, train: Encoded, val: Encoded, cfg: TrainConfig, seed: int, run_dir: Path,
               fingerprint: str, rank: int = 0, world: int = 1, device=torch.device("cpu"), approach=None,
               initial_val: list | None = None) -> dict:
    """Train `model` (what `approach.wrap` made) until early stopping or `cfg.steps`, then load the
    best state into it. Returns the loss log and counters (`val_initial`: the step-0 per-example
    validation scores); resumes from run_dir. `initial_val`: another seed's `val_initial` of the same
    run. At step 0 every seed's model computes the base model's function (LoRA's B starts at 0, the
    trained token rows at their pretrained values), so its validation scores are the same numbers
    and one evaluation serves every seed (tests/test_train.py checks they are identical)."""
    run = _Run(model, tokenizer, train, val, cfg, seed, run_dir, fingerprint, rank, world, device, approach)
    run.resume()
    if run.progress["step"] == 0 and not run.progress["log"]:
        run.validate(0, known=initial_val if approach is not None and approach.starts_as_base else None)
        run.progress["val_initial"] = run.progress["val_last"]
    every_ckpt = cfg.checkpoint_every or cfg.eval_every
    model.train()
    first = run.progress["step"] + 1 if not run.progress["stopped_early"] else cfg.steps + 1
    bar = tqdm(total=cfg.steps, initial=first - 1, desc="train", disable=rank != 0)
    try:
        for step in range(first, cfg.steps + 1):
            started = time.perf_counter()
            batch = [run.examples[i] for i in run.schedule[step - 1]]
            loss_sum, padded = run.step(step, batch)
            run.record(step, time.perf_counter() - started, batch, loss_sum, padded)
            stop = False
            if step % cfg.eval_every == 0 or step == cfg.steps:
                stop = run.validate(step)
                run.progress["stopped_early"] = stop and step < cfg.steps
                if run.progress["stopped_early"]:
                    run.flush_train_row(step)
            if stop or step % every_ckpt == 0 or step == cfg.steps:
                run.checkpoint(step)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / sum(e.reply_tokens for e in batch):.3f}")
            if stop:
                break
    finally:
        bar.close()
    load_trainable_state(model, run.best_state)
    return run.progress
