"""The ``canarygate`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from canarygate import __version__, rollout_cli
from canarygate.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canarygate",
        description="A model-serving gateway with built-in canary routing for ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"canarygate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="start the gateway",
        description="Load the models a config names and serve them over HTTP "
                    "(Open Inference Protocol V2 and KServe V1).",
    )
    serve.add_argument("--config", required=True, help="path of the gateway's YAML config")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    rollout_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "rollout":
        return rollout_cli.run(args)
    parser.print_help()
    return 2


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from canarygate.app import create_app
    from canarygate.config import load_config

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        app = create_app(config)
    except ConfigError as exc:
        print(f"canarygate: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(uvicorn.Config(
        app,
        host=args.host or config.server.host,
        port=args.port if args.port is not None else config.server.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
    ))
    server.run()
    return 0
