"""`bidlens bench [NAME...] [--json]`: run named benchmarks, each beside its baseline."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile

from bench.registry import BenchContext, load_all, machine, run
from cli.output import add_json_flag
from store.pgtemp import PostgresUnavailable, temporary_postgres


def cmd_bench(args) -> int:
    if args.list:
        print("\n".join(sorted(load_all())))
        return 0
    with contextlib.ExitStack() as stack:
        postgres_url = args.postgres_url
        if postgres_url is None and not args.no_postgres:
            try:
                postgres_url = stack.enter_context(temporary_postgres())
            except PostgresUnavailable as exc:
                print(f"bench: PostgreSQL benchmarks skipped: {exc}", file=sys.stderr)
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bidlens-bench-"))
        results = run(args.names, BenchContext(workdir, postgres_url, quick=args.quick))
    if args.json:
        json.dump([r.as_json() for r in results], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"machine: {machine()}")
    print(f"{'benchmark':<38} {'value':>14} {'unit':<14} {'baseline':<34} {'baseline value':>14} {'ratio':>7}")
    for r in results:
        print(f"{r.name:<38} {r.value:>14.4g} {r.unit:<14} {r.baseline:<34} {r.baseline_value:>14.4g} "
              f"{r.ratio:>6.2f}x")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="run benchmarks, each beside its baseline measured in the same run")
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the benchmark names")
    p.add_argument("--quick", action="store_true", help="small sizes (checks the harness, not the figures)")
    p.add_argument("--postgres-url", help="use this PostgreSQL instead of starting a throwaway one")
    p.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL benchmarks")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench)
