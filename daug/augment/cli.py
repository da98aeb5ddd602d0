"""`python -m daug augment`: the augment stage, or one method over a file of records.

    python -m daug augment [--run NAME | --dataset D --method M --size N] [--params FILE]   the stage
    python -m daug augment INPUT OUTPUT --method M [options]             file to file

In the file form, defaults come from params.yaml (section `augment`, the method's block, `backends`,
`seed`) when that file exists, so the CLI and the DVC stage agree; flags override them. The stage
form takes everything from params, as the DVC stage does.
"""
from __future__ import annotations

import sys
from pathlib import Path

from daug import DaugError
from daug.params import PARAMS_FILE


def _max_records(text: str):
    if text.lower() in ("all", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise DaugError(f"--max-records: expected a number or 'all', got {text!r}") from None
    if value < 0:
        raise DaugError(f"--max-records: expected a non-negative number or 'all', got {value}")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("input", nargs="?", help="file form: records to augment (.jsonl or .json array with "
                        "id/instruction/input/output); leave out for the stage form")
    parser.add_argument("output", nargs="?", help="file form: output .jsonl, the inputs plus N_AUG augmented copies "
                        "each, with provenance")
    parser.add_argument("--method", help="augmentation method (see README: none, rd, ri, rs, sr, ...); stage form: "
                        "one of the study's methods (default: every one)")
    parser.add_argument("--run", metavar="NAME", help="stage form: an augmentation of params `augmentations`, by name")
    parser.add_argument("--size", type=int, metavar="N", help="stage form: the training-set size axis (default: any)")
    parser.add_argument("--p", type=float, help="proportion of words to edit (rd, ri, rs, sr)")
    parser.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="any other method parameter, e.g. -P top_k=10 (repeatable)")
    parser.add_argument("--n-aug", type=int, help="augmented copies per record (default: params augment.n_aug)")
    parser.add_argument("--seed", type=int, help="seed (default: params seed)")
    parser.add_argument("--fields", help="comma-separated fields rule methods edit (params: augment.fields)")
    parser.add_argument("--backend", help="backend for model-based methods (a key of params `backends`)")
    parser.add_argument("--dataset", help="dataset name: part of every record's seed; model methods use its "
                        "character; stage form: a key of `datasets` (default: every one)")
    parser.add_argument("--max-records", type=str, help="augment only the first N records, or 'all' "
                        "(params: augment.max_records)")
    parser.add_argument("--batch-size", type=int, help="jobs per method call (does not change the output)")
    parser.add_argument("--metrics", help="also write quality metrics (fidelity, diversity, counts) to this JSON")
    parser.add_argument("--params", default=str(PARAMS_FILE), help=f"parameters file for defaults (default: {PARAMS_FILE})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _method_params(args, section: dict) -> dict:
    import yaml

    params = dict(section.get(args.method) or {})
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DaugError(f"--param: expected KEY=VALUE, got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    if args.p is not None:
        params["p"] = args.p
    return params


# options of the file form only: the stage form takes these from params, as dvc.yaml's stage does
FILE_OPTIONS = ("p", "n_aug", "seed", "fields", "backend", "max_records", "batch_size", "metrics")


def run_stage(args) -> int:
    from daug import params as P
    from daug.augment.apply import stage
    from daug.runs import lookup_augmentation, select

    given = [f"--{o.replace('_', '-')}" for o in FILE_OPTIONS if getattr(args, o) is not None] + (["-P"] if args.param else [])
    if given or args.output:
        raise DaugError(f"{', '.join(given) or 'OUTPUT'}: only for the file form (augment INPUT OUTPUT --method M)")
    params = P.load(args.params)
    if args.run:
        augmentations = [lookup_augmentation(params, args.run)]
    else:
        runs = select(params, dataset=args.dataset, method=args.method, size=args.size)
        augmentations = list({r.augmentation.name: r.augmentation for r in runs}.values())
    for aug in augmentations:
        doc = stage(params, aug, progress=not args.quiet)
        c = doc["counts"]
        print(f"{aug.name}: {c['n_output']} records = {c['n_source']} source + {c['n_augmented']} "
              f"{aug.method} ({c['n_unchanged']} unchanged) in {doc['timings']['seconds']:.1f} s", file=sys.stderr)
    return 0


def run(args) -> int:
    from daug import params as P
    from daug.augment import get_method
    from daug.augment.apply import augment_file, components, variant, with_default_terms

    if args.input is None:
        return run_stage(args)
    if args.output is None or args.method is None:
        raise DaugError("the file form needs INPUT OUTPUT --method M")
    params = P.load(args.params) if Path(args.params).exists() else {}  # else: params/base.yaml's defaults
    section = P.section(params, "augment")
    method, block = variant(section, args.method)  # a variant of params (daug/augment/mix.py) by its name
    get_method(method)  # unknown method: fail first, with the valid choices
    dataset = None
    if args.dataset:
        dataset = P.dataset(params, args.dataset) if args.dataset in (params.get("datasets") or {}) else {"name": args.dataset}
    max_records = _max_records(args.max_records) if args.max_records is not None else section.get("max_records")
    given = {k: v for k, v in _method_params(args, section).items() if k != "method" or method == args.method}
    given = with_default_terms(params or P.defaults(), method, given, args.dataset)
    doc = augment_file(
        args.input, args.output, method, given,
        n_aug=args.n_aug if args.n_aug is not None else section["n_aug"],
        seed=args.seed if args.seed is not None else params.get("seed", P.defaults()["seed"]),
        dataset=dataset, fields=args.fields or section["fields"],
        backend=args.backend, backends=params.get("backends"), batch_size=args.batch_size,
        max_records=max_records, progress=not args.quiet, metrics=args.metrics,
        label=args.method if method != args.method else None, components=components(section, method, given))
    c = doc["counts"]
    limited = f" (first {c['n_source']} of {c['n_input']}: max_records)" if c["n_source"] < c["n_input"] else ""
    print(f"{args.output}: {c['n_output']} records = {c['n_source']} source{limited} + {c['n_augmented']} "
          f"{args.method} ({c['n_unchanged']} unchanged) in {doc['timings']['seconds']:.1f} s", file=sys.stderr)
    return 0
