"""The `regward` command: one entry point for policy checks, the server and the agent.

Each domain adds its own subcommands (`regward.server.cli`, `regward.agent.cli`); those modules
import their heavy dependencies inside the command functions, so `regward check` works on a
machine that installed only the agent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from regward import __version__
from regward.errors import RegwardError


def build_parser() -> argparse.ArgumentParser:
    from regward.agent import cli as agent_cli
    from regward.policy import cli as policy_cli
    from regward.server import cli as server_cli

    parser = argparse.ArgumentParser(
        prog="regward", description="Registry access management for Docker Engine."
    )
    parser.add_argument("--version", action="version", version=f"regward {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    policy_cli.add_commands(commands)
    server_cli.add_commands(commands)
    agent_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 2 with one line on stderr for any error meant for the user."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except RegwardError as error:
        print(f"regward: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
