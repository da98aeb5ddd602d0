"""`python -m daug <command>`: one command per pipeline stage, plus helpers.

Every stage command has the same shape, and runs the stage module's `stage(params, dataset, method)`
(the function the stage notebook calls), writing the paths of daug/paths.py:

    python -m daug <stage> [--dataset D] [--method M] [--params FILE]

A stage run per dataset (prepare) or per dataset x method (augment, train, evaluate) runs for every
one in params when --dataset / --method is left out. Three file-to-file forms stay for ad hoc use:

    python -m daug prepare RAW OUT_DIR [--name N] [--seed S] [--strict]
    python -m daug augment IN OUT --method M [--p P] [-P KEY=VALUE] [--n-aug N] ...
    python -m daug score PREDICTIONS.jsonl [--bootstrap N] [--seed S]

Each command lives in its own module, which provides `add_arguments(parser)` and `run(args)`;
adding a command is adding a row to COMMANDS. Modules are imported only when their command runs,
so `python -m daug score` does not pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from daug import DaugError
from daug.params import PARAMS_FILE

# command -> (module, one-line help). Order follows the data flow.
COMMANDS = {
    "profile": ("daug.profile_cmd", "write params.yaml for a profile (smoke, cpu, paper)"),
    "notebook": ("daug.notebook", "run a stage notebook with papermill and render it to HTML"),
    "prepare": ("daug.prepare", "validate, clean, deduplicate and split a raw dataset"),
    "base-model": ("daug.basemodel", "materialise the profile's base model as a plain Hugging Face copy"),
    "augment": ("daug.augment.cli", "augment a training split with one method"),
    "train": ("daug.train", "fine-tune a LoRA adapter"),
    "evaluate": ("daug.evaluate", "generate replies for the test split and score them"),
    "score": ("daug.scoring", "score predictions (BLEU, ROUGE-1/2/L with 95%% CIs)"),
    "compare": ("daug.compare", "paired comparison of two runs' per-example scores (difference, CI, p, Holm)"),
    "report": ("daug.report", "render the study report"),
}


def stage_arguments(parser, dataset: bool = False, method: bool = False) -> None:
    """The flags every stage command shares: [--dataset D] [--method M] [--params FILE]."""
    if dataset:
        parser.add_argument("--dataset", metavar="D", help="a key of `datasets` in params (default: every one)")
    if method:
        parser.add_argument("--method", metavar="M", help="one of `augment.methods` (default: every one)")
    parser.add_argument("--params", default=str(PARAMS_FILE), metavar="FILE",
                        help=f"parameters file (default: {PARAMS_FILE})")


def stage_runs(params: dict, dataset: str | None, method: str | None = None,
               per_method: bool = True) -> list[tuple[str, str | None]]:
    """The (dataset, method) runs a stage command makes: the ones given, else every one in params."""
    datasets = [dataset] if dataset else list(params.get("datasets") or {})
    methods = [method] if method else list((params.get("augment") or {}).get("methods") or [])
    return [(d, m) for d in datasets for m in (methods if per_method else [None])]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m daug", description=doc[0],
                                     epilog="\n\n".join(doc[1:-1]), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    try:
        args = build_parser(command).parse_args(argv)
        return importlib.import_module(COMMANDS[args.command][0]).run(args) or 0
    except DaugError as e:
        print(f"daug {command or ''}: error: {e}".replace("  ", " "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
