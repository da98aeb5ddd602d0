"""`python -m daug profile NAME`: make NAME the active profile (rewrites params.yaml)."""
from daug.params import profiles, write_profile


def add_arguments(parser) -> None:
    parser.add_argument("name", help=f"profile name ({', '.join(profiles())})")


def run(args) -> int:
    params = write_profile(args.name)
    print(f"params.yaml now holds profile {params['profile']!r}; run `dvc repro` to bring outputs up to date")
    return 0
