"""resnet-search SUBCOMMAND [ARGS]: one command for the project's five entry points.

Each subcommand hands its arguments, untouched, to the entry point's own parser, so the flags and their
help text live in one place (search/run.py, ensemble/__main__.py, ...) and cannot drift; `resnet-search
SUBCOMMAND --help` prints that parser's help. The entry module is imported only when its subcommand runs:
`resnet-search --help` loads no torch, and `trial` is the only subcommand that ever imports the trial.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    module: str          # the entry point's module; its main(argv, prog=...) parses argv
    summary: str
    implied: tuple = ()  # arguments put in front of the user's (dry-run and resume are run.py flags)
    spelled: str = ""    # the same command without the console script


SUBCOMMANDS = {
    "run": Subcommand("search.run", "run a search: TPE + ASHA on Ray Tune, then the ensemble",
                      spelled="python search/run.py"),
    "dry-run": Subcommand("search.run", "check the space, data and budgets and print the plan; run nothing",
                          ("--dry-run",), "python search/run.py --dry-run"),
    "resume": Subcommand("search.run", "continue an interrupted search: resnet-search resume --name NAME",
                         ("--resume",), "python search/run.py --resume"),
    "grow": Subcommand("search.run", "add trials (a wider space) to a finished search: resnet-search grow --name "
                       "NAME --num-samples TOTAL", ("--grow",), "python search/run.py --grow"),
    "ensemble": Subcommand("ensemble.__main__", "(re)build the ensemble of a finished search's top trials",
                           spelled="python -m ensemble"),
    "predict": Subcommand("ensemble.predict", "label a folder of images with a run's ensemble",
                          spelled="python -m ensemble.predict"),
    "report": Subcommand("search.report", "write a run's report (importance, curves, report.html)",
                         spelled="python search/report.py"),
    "trial": Subcommand("trainable.__main__", "train one config without Ray (python -m trainable)",
                        spelled="python -m trainable"),
}
PROG = "resnet-search"


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: {PROG} SUBCOMMAND [ARGS...]", "", __doc__.splitlines()[0].split(": ", 1)[1], "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", f"`{PROG} SUBCOMMAND --help` lists a subcommand's options. Each is the same as its older spelling:"]
    lines += [f"  {PROG} {name:<{width}} = {sub.spelled}" for name, sub in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    sub = SUBCOMMANDS.get(name)
    if sub is None:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f" Did you mean `{PROG} {close[0]}`?" if close else ""
        print(f"error: {name!r} is not a {PROG} subcommand.{hint} The subcommands are: {', '.join(SUBCOMMANDS)} "
              f"(`{PROG} --help`).", file=sys.stderr)
        return 2
    entry = importlib.import_module(sub.module)
    return entry.main([*sub.implied, *rest], prog=f"{PROG} {name}")


if __name__ == "__main__":
    sys.exit(main())
