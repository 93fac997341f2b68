"""The `regward` command: one entry point for policy checks, the server and the agent.

`check` and `policy lint` live here; the server and the agent add their own subcommands
(`regward.server.cli`, `regward.agent.cli`), importing heavy dependencies inside the command
functions, so `regward check` works on a machine that installed only the agent.

Exit codes of `check`: 0 allowed, 1 denied, 2 invalid input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regward import __version__
from regward.errors import InvalidPolicyFile, RegwardError
from regward.policy import Action, ImageReference, evaluate, lint


def build_parser() -> argparse.ArgumentParser:
    from regward.agent import cli as agent_cli
    from regward.server import cli as server_cli

    parser = argparse.ArgumentParser(
        prog="regward", description="Registry access management for Docker Engine."
    )
    parser.add_argument("--version", action="version", version=f"regward {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="would this image be allowed?", description="Explain the policy's decision."
    )
    check.add_argument("image", metavar="IMAGE", help="image reference, e.g. ghcr.io/acme/app:1")
    check.add_argument(
        "--policy",
        metavar="FILE",
        help="policy file (JSON or YAML); by default, what this machine's agent enforces",
    )
    check.add_argument("--action", choices=[a.value for a in Action], default=Action.PULL.value)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(run=run_check)

    policy = commands.add_parser("policy", help="work with policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    lint_parser = policy_commands.add_parser("lint", help="warn about risky or dead entries")
    lint_parser.add_argument("file", metavar="FILE")
    lint_parser.set_defaults(run=run_lint)

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


def run_check(args: argparse.Namespace) -> int:
    from regward.agent.guard import Guard
    from regward.agent.state import AgentState, load_policy_file

    reference = ImageReference.parse(args.image)
    action = Action(args.action)
    if args.policy:
        decision = evaluate(load_policy_file(Path(args.policy)), action, reference)
        message = decision.reason
    else:  # what this machine's agent enforces: its sign-in and cache, registry.json
        guard = Guard(AgentState().enforcement())
        decision = guard.decide(action, reference, source="check")
        message = guard.message(decision)
    if args.json:
        result: dict[str, Any] = {
            "input": args.image,
            "reference": str(reference),
            "registry": reference.registry,
            "repository": reference.repository,
            "action": action.value,
            "allowed": decision.allowed,
            "reason": decision.reason,
            "entry": str(decision.entry.address) if decision.entry else None,
            "revision": decision.revision,
        }
        print(json.dumps(result))
    else:
        print(f"{'allowed' if decision.allowed else 'denied'}: {reference} ({action.value})")
        print(message)
    return 0 if decision.allowed else 1


def run_lint(args: argparse.Namespace) -> int:
    from regward.agent.state import load_policy_file

    try:
        policy = load_policy_file(Path(args.file))
    except InvalidPolicyFile as error:  # every problem, one a line, as a compiler lists them
        for problem in error.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 2
    warnings = lint(policy)
    for warning in warnings:
        print(warning)
    if not warnings:
        print(f"{args.file}: no warnings")
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main())
