"""``authtrail export-tiles``: a tenant's log as a static C2SP tlog-tiles directory.

Exit codes as everywhere: 0 exported; 1 the store is damaged (records that are no tree,
leaves that do not hash to the signed root, a served tile that would change, or stored
tile entries that disagree with the leaves: the export is still written, from the
leaves); 2 usage, no such checkpoint, an unwritable directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from authtrail.cli.commands import EXIT_DAMAGE, EXIT_OK
from authtrail.settings import Settings


def add_tiles_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export-tiles`` subcommand to ``commands`` (subparsers)."""
    export = commands.add_parser(
        "export-tiles",
        help="write one tenant's log as a static C2SP tlog-tiles directory",
        description="Write DIR/checkpoint (the tenant's newest stored signed checkpoint, or "
        "the one of --tree-size), DIR/tile/<L>/<N>[.p/<W>] and DIR/tile/entries/<N>[.p/<W>] "
        "(https://c2sp.org/tlog-tiles), rebuilt from the stored leaves and checked against "
        "the checkpoint's root. Serve DIR as static files at the log's URL prefix; any "
        "tlog-tiles client then computes proofs itself. Running it again later adds what "
        "the log grew by, continuing from DIR/checkpoint (--full: from the first leaf); "
        "it never changes a tile already there. Needs no key.",
    )
    export.add_argument("directory", type=Path, metavar="DIR", help="the tenant's log prefix")
    export.add_argument("--tenant", required=True, help="the tenant whose log to export")
    export.add_argument(
        "--tree-size", type=int, metavar="N", help="export the stored checkpoint of size N"
    )
    export.add_argument(
        "--no-entries", action="store_true",
        help="write no entry bundles (tiles and checkpoint only)",
    )  # fmt: skip
    export.add_argument(
        "--full", action="store_true",
        help="read and check every leaf again instead of continuing from DIR/checkpoint",
    )  # fmt: skip
    export.add_argument(
        "--clickhouse-url", help="http://user:pass@host:8123/db (AUTHTRAIL_CLICKHOUSE_URL)"
    )
    export.set_defaults(handler=run_export_tiles)


def run_export_tiles(args: argparse.Namespace, settings: Settings) -> int:
    from authtrail.sinks.service import open_backend
    from authtrail.sinks.tile_export import export_tiles

    backend = open_backend(settings, read_only=True)
    try:
        summary = export_tiles(
            backend, args.tenant, args.directory,
            tree_size=args.tree_size, entries=not args.no_entries, full=args.full,
        )  # fmt: skip
    finally:
        backend.close()
    print(
        f"tenant {summary.tenant_id!r}: tree of size {summary.size} in {args.directory}: "
        f"{summary.tiles} tiles, {summary.entry_bundles} entry bundles "
        f"({summary.written} files written, {summary.unchanged} already there)",
        file=sys.stderr,
    )
    if summary.resumed_from:
        print(
            f"continued from the {args.directory} served (leaves 1..{summary.resumed_from} not "
            "read again; its tiles checked with the root, its entry bundles not re-read; "
            "--full re-checks everything)",
            file=sys.stderr,
        )
    if summary.pruned_size:
        print(
            f"records 1..{summary.pruned_size} were pruned under a retention statement: no "
            f"level-0 tiles or entry bundles below seq {summary.pruned_size + 1}; the level-1 "
            "entries standing for them are the stored ones, checked with the root",
            file=sys.stderr,
        )
    if summary.tile_mismatches:
        shown = ", ".join(f"level {level} entry {index}" for level, index in
                          summary.tile_mismatches[:5])  # fmt: skip
        print(
            f"authtrail: integrity failure: tenant {summary.tenant_id!r}: "
            f"{len(summary.tile_mismatches)} stored tile entries disagree with the leaves "
            f"({shown}); the export was built from the leaves; run `authtrail verify`",
            file=sys.stderr,
        )
        return EXIT_DAMAGE
    return EXIT_OK
