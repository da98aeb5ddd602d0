"""The study vocabulary (params model.vocabulary: study; daug/vocabulary.py): the loss is the softmax
over the vocabulary plus each target itself, its gradient is autograd's, generation picks only
vocabulary tokens, and the vocabulary comes from the training and validation splits alone."""
from __future__ import annotations

import copy

import pytest
import torch

from daug import DaugError
from daug.training.data import IGNORE, collate
from daug.vocabulary import Vocabulary, attach, build, check_choice, study_ids
from tests.test_train import EOT, SYSTEM, encode_records, lora_with_moved_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records():
    from tests.test_train import RAW
    from daug.io import read_records

    return read_records(RAW)[:8]


def a_vocabulary(tokenizer, labels, drop: int = 5) -> Vocabulary:
    """The batch's reply tokens but `drop` of them (their targets take the extra column), the
    end-of-turn marker, and 300 other ids."""
    used = sorted(set(labels[labels != IGNORE].tolist()))
    eot = tokenizer.convert_tokens_to_ids(EOT[0])
    kept = [t for t in used if t != eot][drop:] + [eot] + list(range(1000, 1300))
    assert len(set(used) - set(kept)) == drop
    return Vocabulary.of(kept, len(tokenizer))


def reference_loss(logits, labels, vocab: Vocabulary):
    """-log softmax over (vocabulary + the target) at the target, written out per position."""
    logits, targets = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    keep = targets != IGNORE
    logits, targets = logits[keep].float(), targets[keep]
    allowed = torch.zeros_like(logits, dtype=torch.bool)
    allowed[:, vocab.keep] = True
    allowed[torch.arange(len(targets)), targets] = True
    return torch.nn.functional.cross_entropy(logits.masked_fill(~allowed, float("-inf")), targets, reduction="sum")


@pytest.mark.parametrize("softcap,tokens", [(None, []), (0.05, EOT)])
def test_the_loss_and_its_gradient_are_the_written_out_definition(tiny_model_dir, tokenizer, records, softcap,
                                                                   tokens):
    from daug.training.loss import ReplyLoss, example_losses

    model = lora_with_moved_rows(tiny_model_dir, tokens)
    model.get_base_model().config.final_logit_softcapping = softcap
    enc = encode_records(tokenizer, records, SYSTEM, 64)
    ids, mask, labels = collate(enc.examples, tokenizer.pad_token_id)
    vocab = a_vocabulary(tokenizer, labels)
    model.train()
    expected = reference_loss(model(input_ids=ids, attention_mask=mask).logits, labels, vocab)
    expected.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    attach(model.get_base_model(), vocab)
    total, count = ReplyLoss(model)(ids, mask, labels)
    total.backward()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6, msg=name)
    per_example = example_losses(model, enc.examples, tokenizer.pad_token_id, 3)
    assert sum(e.loss for e in per_example) == pytest.approx(expected.item(), rel=1e-5)
    attach(model.get_base_model(), None)
    with torch.no_grad():
        full, _ = ReplyLoss(model)(ids, mask, labels)
    assert full.item() > total.item() + 1  # the whole vocabulary's softmax: a different, larger loss


def test_generation_picks_only_vocabulary_tokens_and_the_whole_vocabulary_changes_nothing(tiny_model_dir,
                                                                                          tokenizer, records):
    from daug.basemodel import load_model
    from daug.chat import messages, prompt_text, stop_token_ids
    from daug.generate import generate

    model = load_model(tiny_model_dir).eval()
    prompts = [prompt_text(tokenizer, messages(r, SYSTEM)) for r in records[:4]]
    plain = generate(model, tokenizer, prompts, 12, batch_size=2, progress=False, repetition_penalty=1.3)
    attach(model, Vocabulary.of(range(len(tokenizer)), len(tokenizer)))
    assert generate(model, tokenizer, prompts, 12, batch_size=2, progress=False, repetition_penalty=1.3) == plain
    chars = [c for c in "的了我你是不在人有这他们大小上下" if tokenizer.convert_tokens_to_ids(c) != tokenizer.unk_token_id]
    assert len(chars) >= 10
    small = Vocabulary.of([tokenizer.convert_tokens_to_ids(c) for c in chars] + stop_token_ids(tokenizer),
                          len(tokenizer))
    attach(model, small)
    replies = generate(model, tokenizer, prompts, 12, batch_size=2, progress=False, repetition_penalty=1.3)
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)  # the head is restored after generating
    assert any(replies) and all(set(reply) <= set(chars) for reply in replies), replies
    assert replies != plain


def test_the_vocabulary_holds_the_training_and_validation_replies_and_what_must_be_there(tokenizer, records):
    from daug.chat import stop_token_ids

    stop = stop_token_ids(tokenizer)
    ids = study_ids(tokenizer, {"zhenhuan": (records[:4], SYSTEM)}, 64, stop)
    enc = encode_records(tokenizer, records[:4], SYSTEM, 64)
    replies = {t for e in enc.examples for t in e.labels if t != IGNORE}
    assert set(ids) == replies | set(stop)
    assert ids == sorted(ids)


def test_full_is_the_default_and_a_bad_choice_is_refused(smoke_params):
    params = copy.deepcopy(smoke_params)
    params["model"].pop("vocabulary", None)
    assert build(params, "no-model-needed")["ids"] is None
    with pytest.raises(DaugError, match="model.vocabulary: 'small'"):
        check_choice("small")
    with pytest.raises(DaugError, match="study vocabulary: ids must lie"):
        Vocabulary.of([-1, 3], 10)


def test_the_base_model_stage_reads_the_training_replies_never_the_splits_it_is_measured_on(
        smoke_params, tiny_model_dir, tokenizer, records, tmp_path, monkeypatch):
    import shutil

    from daug.io import read_json, write_jsonl
    from daug.vocabulary import FILE, write

    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(smoke_params)
    params["model"]["vocabulary"] = "study"
    params["datasets"] = {"zhenhuan": params["datasets"]["zhenhuan"]}
    shutil.copytree(tiny_model_dir, "models/base")
    unseen = {"val": "龘靐齉", "test": "爩麤灪"}
    split = {"train": records[:6], **{name: [{"id": f"{name}-1", "instruction": "问", "input": "", "output": text}]
                                      for name, text in unseen.items()}}
    for name, rows in split.items():
        write_jsonl(tmp_path / f"data/prepared/zhenhuan/{name}.jsonl", rows)
    content = write(params, "models/base")
    assert read_json(f"models/base/{FILE}") == content and content["splits"] == ["train"]
    expected = study_ids(tokenizer, {"zhenhuan": (records[:6], params["datasets"]["zhenhuan"]["system_prompt"])},
                         params["train"]["max_length"])
    assert set(expected) <= set(content["ids"]) and content["count"] == len(content["ids"])
    for text in unseen.values():
        only_there = set(tokenizer(text, add_special_tokens=False)["input_ids"]) - set(expected)
        assert only_there and not only_there & set(content["ids"])


def test_training_and_evaluation_load_the_base_folder_s_vocabulary(tiny_model_dir, tmp_path):
    import shutil

    from daug.approaches import get_approach
    from daug.evaluate import load
    from daug.io import write_json
    from daug.training.loop import trainable_model
    from daug.vocabulary import FILE, of_model
    from tests.test_train import LORA

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cpu = torch.device("cpu")
    assert of_model(trainable_model(base, {"dtype": "float32"}, get_approach("lora-qv", LORA), EOT, 0, "float32",
                                    cpu)) is None  # no file: the whole vocabulary
    ids = [1, 106, 2000, 3000]
    write_json(base / FILE, {"choice": "study", "ids": ids, "count": 4, "splits": ["train", "val"]})
    model = trainable_model(base, {"dtype": "float32"}, get_approach("lora-qv", LORA), EOT, 0, "float32", cpu)
    assert of_model(model).keep.tolist() == ids
    assert of_model(load(base, None)[0]).keep.tolist() == ids


def test_generation_over_the_vocabulary_is_greedy_decoding_of_the_masked_full_logits(tiny_model_dir, tokenizer,
                                                                                      records):
    """Unmerged trained rows included (peft TrainableTokens on the tied head, as a 4-bit model keeps
    them): the restricted head must carry the trained rows, not the frozen ones."""
    from daug.chat import messages, prompt_text, stop_token_ids
    from daug.generate import generate

    model = lora_with_moved_rows(tiny_model_dir, EOT).eval()
    prompts = [prompt_text(tokenizer, messages(r, SYSTEM)) for r in records[:3]]
    enc = encode_records(tokenizer, records, SYSTEM, 64)
    ids, _, labels = collate(enc.examples, tokenizer.pad_token_id)
    vocab = a_vocabulary(tokenizer, labels, drop=0)
    stop = set(stop_token_ids(tokenizer))
    expected = []
    with torch.no_grad():
        for prompt in prompts:
            seq, reply = tokenizer(prompt, add_special_tokens=True)["input_ids"], []
            while len(reply) < 8:
                logits = model(input_ids=torch.tensor([seq + reply])).logits[0, -1]
                masked = torch.full_like(logits, float("-inf"))
                masked[vocab.keep] = logits[vocab.keep]
                token = int(masked.argmax())
                if token in stop:
                    break
                reply.append(token)
            expected.append(tokenizer.decode(reply, skip_special_tokens=True))
    attach(model.get_base_model(), vocab)
    assert generate(model, tokenizer, prompts, 8, batch_size=2, progress=False) == expected
