"""`python -m daug profile NAME [--study S]`: make NAME the active profile (rewrites params.yaml)
with the runs of study S (a name from params `studies`, a comma-separated list, or `all`)."""
from daug.params import profiles, write_profile


def add_arguments(parser) -> None:
    parser.add_argument("name", help=f"profile name ({', '.join(profiles())})")
    parser.add_argument("--study", metavar="S", help="the studies to run: a name of params `studies`, a comma-separated "
                                                     "list, or `all` (default: params `study`)")


def run(args) -> int:
    params = write_profile(args.name, study=args.study)
    print(f"params.yaml now holds profile {params['profile']!r}, study {params['study']!r} ({len(params['runs'])} runs); "
          "run `dvc repro` to bring outputs up to date")
    return 0
