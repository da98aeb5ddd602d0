"""Apply one augmentation method to a set of records (and the augment stage): the guarantees live
here, not in the methods.

- Output = every source record (method "none") followed by its n_aug augmented copies, so
  len(out) == n_source * (1 + n_aug) (n_aug is 0 for the `none` baseline). Each output record
  carries its provenance: id, source_id, method, aug_index, params, backend, unchanged.
- Each job's seed depends only on (seed, dataset, method, params, record id, k): output bytes do
  not depend on batch size or record order.
- A copy the method could not change is kept, flagged `unchanged` and counted, never retried.
- Bad params, fields or method names fail with DaugError before any record is read.
- A variant (a params block `augment.<name>` with `method: mix`, daug/augment/mix.py) is written
  under its own name; a filtering variant drops records and lists each with its reasons, so
  output + filtered == n_source * (1 + n_aug).
"""
from __future__ import annotations

import time
from pathlib import Path

from daug import DaugError
from daug.augment import get_method
from daug.augment.base import FIELDS, Job, Method, job_seed
from daug.io import read_records, write_json, write_jsonl, write_metrics
from daug.paths import Paths
from daug.records import ORIGINAL, check_records

PROVENANCE = ("source_id", "method", "aug_index", "params", "backend", "unchanged", "made_by")
DEFAULT_BATCH = 256


def check_fields(fields) -> tuple[str, ...]:
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    fields = tuple(fields or ())
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
        problem = f"{bad[0]!r} is not a record field" if bad else "none given"
        raise DaugError(f"fields: {problem}; choose from: {', '.join(FIELDS)}")
    return tuple(dict.fromkeys(fields))


def _check_count(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DaugError(f"{name} must be a non-negative integer, got {value!r}")


def variant(section: dict, name: str) -> tuple[str, dict]:
    """(registered method, its params) for `name` in the params `augment` section: a registered
    method and its block, or a variant's block `{method: mix, ...}` (daug/augment/mix.py)."""
    block = dict(section.get(name) or {})
    if "method" not in block:
        return name, block
    base = block.pop("method")
    if not isinstance(base, str) or not getattr(get_method(base), "composite", False):
        raise DaugError(f"params augment.{name}.method: {base!r} is not a method that combines others (use 'mix')")
    return base, block


def components(section: dict, method: str, params: dict) -> dict | None:
    """A composite method's components' params blocks (the profile's `augment.<component>`)."""
    if not getattr(get_method(method), "composite", False):
        return None
    names = params.get("methods") or []
    return {m: dict(section.get(m) or {}) for m in names if isinstance(m, str)}


def with_default_terms(params: dict, method: str, block: dict, dataset: str | None) -> dict:
    """A filtering method's block with `out_of_character: null` replaced by the report's persona
    terms (report.persona.out_of_character: `all` and the dataset's own), the one home of that list."""
    if not getattr(get_method(method), "composite", False) or block.get("out_of_character") is not None:
        return block
    terms = ((params.get("report") or {}).get("persona") or {}).get("out_of_character") or {}
    return {**block, "out_of_character": list(terms.get("all") or []) + list(terms.get(dataset) or [])}


def resolve_method(name: str, params: dict | None = None, backend: str | None = None) -> tuple[type[Method], dict]:
    """(method class, validated params): every check that needs no work. `backend` overrides the
    method's `backend` param (model-based methods only)."""
    cls = get_method(name)
    params = dict(params or {})
    if backend is not None:
        if not cls.uses_backend:
            raise DaugError(f"method {name!r} does not use a backend (only model-based methods do)")
        params["backend"] = backend
    return cls, cls.resolve(params)


def make_method(name: str, params: dict | None = None, *, backend: str | None = None,
                backends: dict | None = None, dataset: dict | None = None, components: dict | None = None) -> Method:
    """A ready method; model-based ones get their backend from `backends` (params section), a
    composite one its components, built from `components` ({name: params block})."""
    cls, resolved = resolve_method(name, params, backend)
    if getattr(cls, "composite", False):
        built = {m: make_method(m, (components or {}).get(m), backends=backends, dataset=dataset)
                 for m in resolved["methods"]}
        return cls(resolved, dataset=dataset).bind(built)
    instance = None
    if cls.uses_backend:
        try:
            from daug.backends import get_backend
        except ImportError as e:
            raise DaugError(f"method {name!r} needs an LLM backend, but daug.backends cannot be imported ({e})") from None
        bname = resolved.get("backend")
        instance = get_backend(bname, dict((backends or {}).get(bname) or {}))
    return cls(resolved, backend=instance, dataset=dataset)


def _out_record(src: dict, rid: str, fields: dict, provenance: dict) -> dict:
    rec = {"id": rid, **{f: fields.get(f, "") for f in FIELDS}}
    rec.update((k, v) for k, v in src.items() if k not in rec and k not in PROVENANCE)
    rec.update(provenance)
    return rec


def augment_records(records: list[dict], method: str | Method, params: dict | None = None, n_aug: int = 1,
                    seed: int = 0, dataset: str | dict | None = None, fields=("instruction", "output"),
                    backend: str | None = None, backends: dict | None = None, batch_size: int | None = None,
                    max_records: int | None = None, progress: bool = False,
                    source: str = "input", label: str | None = None,
                    components: dict | None = None) -> tuple[list[dict], dict]:
    """(output records, stats). `method` is a registered name (built with `make_method`) or a
    ready Method; `dataset` a dataset name or its params entry (model methods use character etc.);
    `label` the method name the records carry (a variant's name; default the method's)."""
    fields = check_fields(fields)
    _check_count("n_aug", n_aug)
    _check_count("max_records", max_records, allow_none=True)
    _check_count("batch_size", batch_size, allow_none=True)
    ds = dataset if isinstance(dataset, dict) else ({"name": dataset} if dataset else None)
    if isinstance(method, str):
        method = make_method(method, params, backend=backend, backends=backends, dataset=ds, components=components)
    name, resolved = method.name, method.params
    label = label or name
    provenance = method.provenance() if hasattr(method, "provenance") else resolved
    n_input = len(records)
    records = check_records(records[:max_records] if max_records is not None else records, source,
                            require_id=True)
    n_aug = 0 if method.baseline else n_aug
    ds_name = ds["name"] if ds else None
    jobs = [Job(r, k, job_seed(seed, ds_name, name, resolved, r["id"], k), fields, seed, ds_name)
            for r in records for k in range(n_aug)]
    batch = batch_size or getattr(method.backend, "batch_size", None) or DEFAULT_BATCH

    from tqdm import tqdm

    start = time.perf_counter()
    results = []
    with tqdm(total=len(jobs), desc=f"augment {name}", unit="rec", disable=not progress or not jobs) as bar:
        for i in range(0, len(jobs), batch):
            chunk = jobs[i:i + batch]
            out = method.augment(chunk)
            _check_results(name, chunk, out)
            results.extend(out)
            bar.update(len(chunk))
    screen = getattr(method, "screen", None)
    reasons = screen(jobs, results) if screen else [[] for _ in jobs]
    seconds = time.perf_counter() - start

    backend_info = method.describe_backend()
    out_records, n_unchanged, n_empty, filtered = [], 0, 0, []
    by_source = iter(zip(results, reasons))
    for r in records:
        rid = r["id"]
        out_records.append(_out_record(r, rid, r, {"source_id": rid, "method": ORIGINAL, "aug_index": None,
                                                   "params": {}, "backend": None, "unchanged": False}))
        n_empty += n_aug * sum(not (r.get(f) or "").strip() for f in fields)
        for k in range(n_aug):
            new, dropped = next(by_source)
            unchanged = all(new[f] == (r.get(f) or "") for f in FIELDS)
            n_unchanged += unchanged
            made = {"made_by": new["made_by"]} if "made_by" in new else {}
            if dropped:
                filtered.append({"id": f"{rid}/{label}/{k}", "source_id": rid, **made, "reasons": dropped})
                continue
            out_records.append(_out_record(r, f"{rid}/{label}/{k}", new, {
                "source_id": rid, "method": label, "aug_index": k, "params": provenance,
                "backend": backend_info, "unchanged": unchanged, **made}))
    stats = {"n_input": n_input, "n_source": len(records), "n_aug": n_aug, "n_augmented": len(jobs),
             "n_unchanged": n_unchanged, "n_output": len(out_records), "n_empty_fields": n_empty,
             "seconds": round(seconds, 3)}
    if screen:
        stats["n_filtered"] = len(filtered)
        stats["filtered_by_reason"] = {x: sum(x in f["reasons"] for f in filtered) for x in method.reasons}
        stats["filtered"] = filtered
    # every record accounted for: written, or filtered with its reasons
    assert stats["n_output"] + len(filtered) == stats["n_source"] * (1 + n_aug)
    return out_records, stats


def _check_results(name: str, jobs: list[Job], results) -> None:
    if not isinstance(results, list) or len(results) != len(jobs):
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise DaugError(f"method {name!r} returned {got} results for {len(jobs)} jobs")
    for job, res in zip(jobs, results):
        if not isinstance(res, dict) or any(not isinstance(res.get(f), str) for f in FIELDS):
            raise DaugError(f"method {name!r}: result for {job.record['id']!r} must map each of "
                            f"{', '.join(FIELDS)} to a string, got {res!r:.200}")


def augment_file(input: str | Path, output: str | Path, method: str, params: dict | None = None, *,
                 n_aug: int = 1, seed: int = 0, dataset: str | dict | None = None,
                 fields=("instruction", "output"), backend: str | None = None, backends: dict | None = None,
                 batch_size: int | None = None, max_records: int | None = None, progress: bool = False,
                 metrics: str | Path | None = None, metrics_extra: dict | None = None,
                 label: str | None = None, components: dict | None = None) -> dict:
    """Augment a JSON/JSONL file of records into a JSONL file; with `metrics`, also measure quality
    and write the metrics JSON. Returns that document (counts always, quality with `metrics`), with
    the wall time (not a metric) under `timings`. `label` and `components`: a variant's name and
    its components' params (`variant`, `components`)."""
    input = Path(input)
    fields = check_fields(fields)
    for name, value in (("n_aug", n_aug), ("max_records", max_records), ("batch_size", batch_size)):
        _check_count(name, value, allow_none=name != "n_aug")
    resolve_method(method, params, backend)
    if not input.exists():  # before a backend loads a model
        raise DaugError(f"{input}: file not found")
    ds = dataset if isinstance(dataset, dict) else ({"name": dataset} if dataset else None)
    built = make_method(method, params, backend=backend, backends=backends, dataset=ds, components=components)
    records, stats = augment_records(read_records(input), built, n_aug=n_aug, seed=seed, dataset=ds, fields=fields,
                                     batch_size=batch_size, max_records=max_records, progress=progress,
                                     source=str(input), label=label)
    write_jsonl(output, records)
    filtered = stats.pop("filtered", None)
    doc = {"dataset": ds["name"] if ds else None, "method": label or built.name, "backend": built.describe_backend(),
           "params": built.provenance() if hasattr(built, "provenance") else built.params,
           "n_aug": stats["n_aug"], "fields": list(fields), "seed": seed,
           "max_records": max_records, "counts": {k: v for k, v in stats.items() if k != "seconds"},
           **({"filtered": filtered} if filtered is not None else {}), **(metrics_extra or {})}
    if metrics is not None:
        from daug.augment.quality import quality

        doc.update(quality(records))
        doc = write_metrics(metrics, doc)
    return {**doc, "timings": {"seconds": stats["seconds"]}}


def stage(params: dict, augmentation, progress: bool = True) -> dict:
    """The augment stage for one augmentation (daug/runs.py: a dataset's first `size` training
    originals, None: `augment.max_records`, with one method; or its name): the prepared train split
    -> the augmented file, its metrics and its timings (daug/paths.py). Returns the metrics, with
    the timings under `timings`."""
    from daug.params import dataset as dataset_entry, section as params_section
    from daug.runs import lookup_augmentation

    aug = lookup_augmentation(params, augmentation) if isinstance(augmentation, str) else augmentation
    section = params_section(params, "augment")
    ds = dataset_entry(params, aug.dataset)
    paths = Paths.of(params)
    size = aug.size if aug.size is not None else section.get("max_records")
    method, block = variant(section, aug.method)
    block = with_default_terms(params, method, block, aug.dataset)
    doc = augment_file(
        paths.prepared(aug.dataset, "train"), paths.augmented(aug), method, block,
        n_aug=section["n_aug"], seed=params.get("seed", 0), dataset=ds,
        fields=section["fields"], backends=params.get("backends"),
        max_records=size, progress=progress,
        metrics=paths.augment_metrics(aug), metrics_extra={"profile": params.get("profile")},
        label=aug.method if method != aug.method else None, components=components(section, method, block))
    write_json(paths.timings("augment", aug), doc["timings"])
    return doc
