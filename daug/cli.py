"""`python -m daug <command>`: one command per pipeline stage, plus helpers.

Each command lives in its own module, which provides `add_arguments(parser)` and `run(args)`;
adding a command is adding a row to COMMANDS. Modules are imported only when their command runs,
so `python -m daug score` does not pay for importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from daug import DaugError

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
    "report": ("daug.report", "render the study report"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m daug", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
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
