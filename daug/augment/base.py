"""The Method interface every augmentation method implements, and the Job it is given.

A method turns jobs into new record fields. A job carries its own seed, derived only from
(seed, dataset, method, params, record id, k), and that seed is the job's ONLY source of
randomness: so output does not depend on batch size, order or worker count.

Rule methods edit each requested field on its own: subclass `TextMethod`, implement
`transform(text, rng)`. Model-based methods set `uses_backend = True`, take the backend's name
from their `backend` param (daug.augment.apply builds it with `daug.backends.get_backend`) and override
`augment` to work on whole batches. daug.augment.apply reads two optional backend attributes:
`describe()` -> {"name", "model"} for provenance, and `batch_size`, the jobs per `augment` call.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from daug import DaugError
from daug.io import stable_hash
from daug.records import FIELDS  # the record fields a method may produce
from daug.registry import plugin_defaults, resolve_params


@dataclass(frozen=True)
class Job:
    record: dict               # the source record (id, instruction, input, output)
    index: int                 # k in 0..n_aug-1
    seed: int                  # stable_hash(seed, dataset, method, params, record id, k)
    fields: tuple[str, ...]    # which fields a rule method edits
    run_seed: int | None = None  # the augment seed and dataset the job's seed came from: a composite
    dataset: str | None = None   # method (daug/augment/mix.py) derives its components' jobs from them


def job_seed(seed: int, dataset: str | None, method: str, params: dict, record_id: str, k: int) -> int:
    return stable_hash(seed, dataset, method, params, record_id, k)


class Method:
    """One augmentation method. Subclasses set `name` and register themselves with
    `@daug.augment.register`; their params and defaults are the `augment.<name>` block of
    params/base.yaml (see `daug.registry.plugin_defaults`)."""

    name: ClassVar[str]
    uses_backend: ClassVar[bool] = False
    baseline: ClassVar[bool] = False   # True only for `none`: the output is the originals alone

    def __init__(self, params: dict | None = None, backend=None, dataset: dict | None = None):
        self.params = self.resolve(params)
        self.backend = backend
        self.dataset = dataset

    @classmethod
    def resolve(cls, params: dict | None) -> dict:
        """Defaults merged with `params`, validated. Raises DaugError before any work is done."""
        merged = resolve_params(f"method {cls.name!r}", plugin_defaults("augment", cls), params)
        if "p" in merged and not 0.0 <= merged["p"] <= 1.0:
            raise DaugError(f"method {cls.name!r}: p must be in [0, 1], got {merged['p']}")
        cls.check(merged)
        return merged

    @classmethod
    def check(cls, params: dict) -> None:
        """Method-specific validation of resolved params (raise DaugError)."""

    def describe_backend(self) -> dict | None:
        """Provenance of the backend: {"name", "model"}, or None for rule methods."""
        if self.backend is None:
            return None
        describe = getattr(self.backend, "describe", None)
        if callable(describe):
            return describe()
        return {"name": getattr(self.backend, "name", type(self.backend).__name__),
                "model": getattr(self.backend, "model", None)}

    def augment(self, jobs: list[Job]) -> list[dict]:
        """One result per job, same order: the new {"instruction", "input", "output"} fields."""
        raise NotImplementedError


class TextMethod(Method):
    """A rule method that edits each requested field independently with `transform`."""

    def augment(self, jobs: list[Job]) -> list[dict]:
        return [self.augment_one(job) for job in jobs]

    def augment_one(self, job: Job) -> dict:
        out = copy_fields(job.record)
        for field in job.fields:
            text = out[field]
            if text.strip():  # empty or whitespace-only text has nothing to edit
                out[field] = self.transform(text, field_rng(job, field))
        return out

    def transform(self, text: str, rng: random.Random) -> str:
        raise NotImplementedError


def copy_fields(record: dict) -> dict:
    """The record's text fields as a method result that changes nothing (absent fields are "")."""
    return {f: record.get(f) or "" for f in FIELDS}


def edit_count(p: float, n_words: int) -> int:
    """Edits for a text of n_words: round(p * n_words), at least one when p > 0 and there is a word."""
    if p <= 0 or n_words <= 0:
        return 0
    return max(1, int(p * n_words + 0.5))


def field_rng(job: Job, field: str) -> random.Random:
    """The random stream for one field of one job: independent of every other field and job."""
    return random.Random(job.seed ^ stable_hash(field))
