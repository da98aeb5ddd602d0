"""The study vocabulary: an explicit profile choice (params `model.vocabulary`) that scores and
generates over the tokens the study's replies use instead of the model's whole vocabulary.

Why: Gemma 3 270M's head has 262,144 rows, and on every scored or generated token it costs more
than the transformer body; the training replies of the two datasets use 5,999 of them (6,002 with
the stop tokens; docs/training.md). With `vocabulary: study` the studied model's softmax runs over
    V = every token of a reply (end-of-turn marker included) in the prepared TRAINING split of
        each of the profile's datasets (all of it, not only the records a profile trains on),
        encoded as training encodes them,
      + the stop tokens and the rows an approach trains (train.trainable_tokens)
(validation and test replies are not read: V is not fitted to the data it is measured on). A
target outside V (a rarer token of a validation or test reply, or one an LLM augmentation
introduced) is still scored, against V plus itself:
    loss(y) = -log( exp(z_y) / (sum over v in V of exp(z_v) + [y not in V] exp(z_y)) )
so no token is dropped and every reply keeps its length; generation picks from V only. It is a
different model from `vocabulary: full` (its softmax normalises over fewer tokens: losses are lower
and not comparable with a full-vocabulary run's), the same for every method of a study, so paired
method - none differences stay meaningful. docs/training.md ("The study vocabulary") has its
measured effect on the endpoint and on degeneration; `full` (base.yaml's default) changes nothing.

The base_model stage writes the ids into the base-model folder (FILE; it reads the prepared training
splits for it); the train and evaluate stages attach them to the model they load (`attach_saved`), and the
loss (daug/training/loss.py) and generation (daug/generate.py) read them from there. Augmentation
backends load the base model without it: the augmenting LLM is not the model under study.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daug import DaugError

CHOICES = ("full", "study")
FILE = "daug_vocabulary.json"  # in the base-model folder
SPLITS = ("train",)  # never the splits the model is measured on


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """`keep`: the kept token ids, ascending (K,); `pos`: for every token id its index in `keep`, or -1."""
    keep: "torch.Tensor"  # noqa: F821
    pos: "torch.Tensor"  # noqa: F821

    @classmethod
    def of(cls, ids, vocab_size: int) -> "Vocabulary":
        import torch

        keep = torch.tensor(sorted(set(int(i) for i in ids)), dtype=torch.long)
        if len(keep) == 0 or keep[0] < 0 or keep[-1] >= vocab_size:
            raise DaugError(f"study vocabulary: ids must lie in [0, {vocab_size}) and not be empty")
        pos = torch.full((vocab_size,), -1, dtype=torch.long)
        pos[keep] = torch.arange(len(keep))
        return cls(keep, pos)

    def __len__(self) -> int:
        return len(self.keep)

    def to(self, device) -> "Vocabulary":
        return self if self.keep.device == device else Vocabulary(self.keep.to(device), self.pos.to(device))


def check_choice(value) -> str:
    if value not in CHOICES:
        raise DaugError(f"params model.vocabulary: {value!r}; choose one of: {', '.join(CHOICES)}")
    return value


def study_ids(tokenizer, records_by_dataset: dict[str, tuple[list[dict], str | None]], max_length: int,
              extra_ids=()) -> list[int]:
    """The reply tokens of `records_by_dataset` ({dataset: (records, system prompt)}), encoded as
    training encodes them, plus `extra_ids` (stop tokens, trained rows)."""
    from daug.training.data import IGNORE, encode_records

    ids = set(int(i) for i in extra_ids)
    for name, (records, system_prompt) in records_by_dataset.items():
        encoded = encode_records(tokenizer, records, system_prompt, max_length, source=f"{name} records")
        for example in encoded.examples:
            ids.update(t for t in example.labels if t != IGNORE)
    return sorted(ids)


def build(params: dict, base_dir: str | Path) -> dict:
    """The vocabulary file's content for the model in `base_dir`: {"choice", "ids" (null for full),
    "count", "splits"}."""
    from daug.basemodel import load_tokenizer
    from daug.chat import stop_token_ids
    from daug.io import read_records
    from daug.paths import Paths

    choice = check_choice((params.get("model") or {}).get("vocabulary", "full"))
    if choice == "full":
        return {"choice": "full", "ids": None, "count": None, "splits": None}
    layout = Paths.of(params)
    tokenizer = load_tokenizer(base_dir)
    data = {}
    for name, ds in params["datasets"].items():
        records = [r for split in SPLITS for r in read_records(layout.prepared(name, split))]
        data[name] = (records, ds.get("system_prompt"))
    trained = tokenizer.convert_tokens_to_ids(list(params["train"].get("trainable_tokens") or []))
    ids = study_ids(tokenizer, data, params["train"]["max_length"], [*stop_token_ids(tokenizer), *trained])
    return {"choice": "study", "ids": ids, "count": len(ids), "splits": list(SPLITS)}


def write(params: dict, base_dir: str | Path) -> dict:
    """The base_model stage's part: FILE in `base_dir` (after the model and tokenizer are there)."""
    from daug.io import write_json

    content = build(params, base_dir)
    write_json(Path(base_dir) / FILE, content)
    return content


def read(base_dir: str | Path, vocab_size: int) -> Vocabulary | None:
    """The base-model folder's vocabulary (None for `full`, or a folder without FILE)."""
    from daug.io import read_json

    path = Path(base_dir) / FILE
    if not path.exists():
        return None
    data = read_json(path)
    return None if data.get("ids") is None else Vocabulary.of(data["ids"], vocab_size)


def attach_saved(model, base_dir: str | Path):
    """`model` (loaded from `base_dir`, any wrapper) with the folder's vocabulary attached."""
    from daug.training.loss import unwrap

    lm = unwrap(model)
    attach(lm, read(base_dir, lm.config.vocab_size))
    return model


def attach(model, vocabulary: Vocabulary | None):
    """Mark `model` (a transformers model; peft wraps the same object) as scoring and generating over
    `vocabulary` (None: its whole vocabulary). Returns the model."""
    model.daug_vocabulary = vocabulary
    return model


def of_model(model) -> Vocabulary | None:
    """The vocabulary attached to `model`, or to the transformers model inside its peft/DDP wrappers."""
    from daug.training.loss import unwrap

    return getattr(unwrap(model), "daug_vocabulary", None)


@contextmanager
def restricted_head(model):
    """For the block, `model`'s output layer computes only the attached vocabulary's logits (K
    columns, in `keep` order); yields the Vocabulary (None, and nothing changed, for `full`). A
    generated column c is the token `keep[c]`."""
    import torch

    from daug.training.loss import trained_rows, unwrap

    vocab = of_model(model)
    if vocab is None:
        yield None
        return
    lm = unwrap(model)
    head = lm.get_output_embeddings()
    trained = trained_rows(head)
    weight = trained.weight if trained is not None else getattr(head, "get_base_layer", lambda: head)().weight
    vocab = vocab.to(weight.device)
    with torch.no_grad():
        rows = weight[vocab.keep].clone()
        if trained is not None:  # rows a peft TrainableTokens layer replaces (not merged: 4-bit)
            rows[vocab.pos[trained.index]] = trained.rows.to(rows.dtype)
    small = torch.nn.Linear(rows.shape[1], rows.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    small.weight = torch.nn.Parameter(rows, requires_grad=False)
    lm.set_output_embeddings(small)
    try:
        yield vocab
    finally:
        lm.set_output_embeddings(head)
