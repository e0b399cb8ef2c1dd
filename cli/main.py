"""`bidlens`: one command, subcommands contributed by modules in CLI_MODULES.

Each module has `register(subparsers)` that adds its commands and sets
`func(args) -> int` on each. Commands that print a result take `--json`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

CLI_MODULES = ["cli.store_cmds", "cli.bench_cmd", "cli.alerts", "cli.sim", "cli.guards", "cli.api", "cli.explain_cmd",
               "cli.review", "cli.demo", "cli.model_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bidlens", description="BidLens: explainable auto-bidding control.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in CLI_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
