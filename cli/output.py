"""Printing results: plain text for people, `--json` for scripts."""

from __future__ import annotations

import json
import sys


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def emit(args, data: object, text: str) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def fail(message: str, code: int = 2) -> int:
    print(f"bidlens: {message}", file=sys.stderr)
    return code
