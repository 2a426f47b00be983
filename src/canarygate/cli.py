"""The ``canarygate`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from canarygate import __version__, replay_cli, rollout_cli
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
    serve.add_argument("--workers", type=int, default=1,
                       help="processes serving on one port (more than 1 needs state.backend: "
                            "redis)")
    serve.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug"])
    rollout_cli.add_parser(commands)
    dataset = commands.add_parser("dataset", help="read the inference dataset",
                                  description="Read the inference dataset's segments.")
    verbs = dataset.add_subparsers(dest="verb", metavar="VERB", required=True)
    summary = verbs.add_parser("summary", help="counts by model, version, variant and status")
    summary.add_argument("path", help="the dataset folder (or one segment)")
    summary.add_argument("--json", action="store_true")
    export = verbs.add_parser("export", help="every record as one Parquet file (pyarrow)")
    export.add_argument("path", help="the dataset folder (or one segment)")
    export.add_argument("--out", required=True, help="the Parquet file to write")
    replay_cli.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("rollout", "versions"):
        return rollout_cli.run(args)
    if args.command == "dataset":
        return _dataset(args)
    if args.command == "replay":
        return replay_cli.run(args)
    parser.print_help()
    return 2


def _serve(args: argparse.Namespace) -> int:
    from canarygate import workers
    from canarygate.config import load_config
    from canarygate.server import booted_server

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, not {args.workers}")
        if (why := workers.refuse_reason(config, args.workers)) is not None:
            raise ConfigError(why)
        if args.workers > 1:
            return workers.serve_group(args, config, args.workers)
        boot, server = booted_server(config, args.host or config.server.host,
                                     args.port if args.port is not None else config.server.port,
                                     args.log_level)
    except ConfigError as exc:
        print(f"canarygate: {exc}", file=sys.stderr)
        return 2
    server.run()
    if boot.failed is not None:  # a model that could not be loaded, found after listening
        print(f"canarygate: {boot.failed}", file=sys.stderr)
        return 2
    # Uvicorn re-raises SIGTERM itself when the drain was cut short (status 143).
    return 0 if server.drained else 1


def _dataset(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from canarygate.recorder import reader

    root = Path(args.path)
    if not root.exists():
        print(f"canarygate: {root} does not exist", file=sys.stderr)
        return 2
    if args.verb == "summary":
        summary = reader.summarize(root)
        print(json.dumps(summary.as_json(), indent=2) if args.json else summary.text())
        return 0
    try:
        rows = reader.export(root, Path(args.out))
    except ImportError:
        print("canarygate: export needs pyarrow: pip install 'canarygate[parquet]'",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"canarygate: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows} records to {args.out}")
    return 0
