"""`python -m daug <command>`: one command per pipeline stage, plus helpers.

Every stage command has the same shape, and runs the stage module's `stage(params, key)` (the
function the stage notebook calls), writing the paths of daug/paths.py:

    python -m daug <stage> [--run NAME | --dataset D --method M ...] [--params FILE]

A stage runs per dataset (prepare) or per run of the grid (augment, train, evaluate: daug/runs.py),
for every one in params when no run is named. Three file-to-file forms stay for ad hoc use:

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
    "train": ("daug.train", "fine-tune one run of the grid (its approach: LoRA on q/v by default)"),
    "evaluate": ("daug.evaluate", "generate replies for the test split and score them"),
    "score": ("daug.scoring", "score predictions (BLEU, ROUGE-1/2/L with 95%% CIs)"),
    "compare": ("daug.compare", "paired comparison of two runs' per-example scores (difference, CI, p, Holm)"),
    "report": ("daug.report", "render the study report"),
    "stages": ("daug.runs", "list the DVC stages of the selected runs (a worker's share with --shard K/N)"),
}


def stage_arguments(parser, dataset: bool = False, run: bool = False) -> None:
    """The flags every stage command shares: [--dataset D] [--params FILE], and for per-run stages
    a run by name (--run) or by its axes (--dataset, --method, --approach, --size, --schedule)."""
    if dataset or run:
        parser.add_argument("--dataset", metavar="D", help="a key of `datasets` in params (default: every one)")
    if run:
        parser.add_argument("--run", metavar="NAME", help="a run of params `runs`, by name (e.g. zhenhuan-rd; daug/runs.py)")
        parser.add_argument("--method", metavar="M", help="an augmentation method (default: every one of the study)")
        parser.add_argument("--approach", metavar="A", help="a fine-tuning approach of params `approaches` (default: any)")
        parser.add_argument("--size", metavar="N", type=int, help="training originals (default: any)")
        parser.add_argument("--schedule", metavar="S", help="a schedule of params `schedules` (default: any)")
    parser.add_argument("--params", default=str(PARAMS_FILE), metavar="FILE",
                        help=f"parameters file (default: {PARAMS_FILE})")


def stage_runs(params: dict, args) -> list:
    """The runs (daug/runs.py) a per-run stage command makes: the one named by --run, else the active
    runs matching the axes given (every one when none is given)."""
    from daug.runs import select

    return select(params, args.run, args.dataset, args.method, args.approach, args.size, args.schedule)


def path_overrides(args, names: tuple[str, ...], runs: list) -> dict:
    """The path options of one run (`--out` ...) as stage() keywords; a DaugError when they are given
    for several runs (a path names one run's file)."""
    given = {name: getattr(args, name) for name in names}
    if len(runs) > 1 and any(v is not None for v in given.values()):
        flags = ", ".join(f"--{n.replace('_', '-')}" for n, v in given.items() if v is not None)
        raise DaugError(f"{flags}: a path names one run's files; choose one run (--run NAME, or its axes)")
    return given


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
