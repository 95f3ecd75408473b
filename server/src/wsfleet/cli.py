"""The ``wsfleet`` command.

``wsfleet serve`` runs a server instance, ``wsfleet client`` a terminal client,
``wsfleet bench`` the load generator and benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from wsfleet import __version__
from wsfleet.config import ConfigError, add_arguments, load_settings
from wsfleet.logs import configure_logging

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsfleet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wsfleet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a WebSocket server instance",
        description="Run one WebSocket server instance. Every flag can also be set as "
        "WSFLEET_<NAME> in the environment or as <name> in the --config TOML file "
        "(precedence: flag > environment > file > default).",
    )
    add_arguments(serve)

    client = commands.add_parser(
        "client",
        help="interactive terminal client",
        description="Print what arrives in a room and send each typed line as a message.",
    )
    client.add_argument("url", help="server URL, e.g. ws://127.0.0.1:8765/ws")
    client.add_argument("--room", required=True, help="room to join")
    client.add_argument("--token", help="JWT, when the server requires one")

    from wsfleet.bench.cli import add_bench_parser

    add_bench_parser(commands)
    return parser


def run(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed, on asyncio's default loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = load_settings(args)
        except ConfigError as exc:
            print(f"wsfleet serve: {exc}", file=sys.stderr)
            return 2
        configure_logging(settings.log_format, settings.log_level)
        from wsfleet.server import run_server

        try:
            return run(run_server(settings))
        except OSError as exc:
            logging.getLogger("wsfleet").error("cannot start: %s", exc)
            return 1
    if args.command == "bench":
        from wsfleet.bench.cli import main as bench_main

        return bench_main(args)
    from wsfleet.client import run_terminal_client

    try:
        return run(run_terminal_client(args.url, args.room, args.token))
    except KeyboardInterrupt:
        return 130
