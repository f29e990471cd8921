"""`saeflow`: run the flows from a YAML spec, inspect what they stored, serve and deploy them.

    saeflow demo                       (what `make demo` runs)
    saeflow harvest spec.yaml --set num_tokens=4096 --set hookpoints=[blocks.1.hook_resid_post]
    saeflow sweep sweep.yaml --set harvest_spec.num_tokens=100000
    saeflow diff diff.yaml
    saeflow features --set saes=./artifacts/saes/<sweep_id> --set harvest=./artifacts/activations/<id>
    saeflow steer --set sae=./artifacts/saes/<sweep_id>/<sae_id> --set latents=[12] --set scales=[4]
    saeflow query ./artifacts/activations/<id> --hookpoint blocks.1.hook_resid_post --seq-id 3
    saeflow query --results ./artifacts/evals/<sweep_id>/results.parquet
    saeflow serve | saeflow deploy --api-url http://127.0.0.1:4200/api

Spec errors (bad YAML, unknown keys, invalid values) and everything flows.preflight can check
without compute (model directories and their config.json, hookpoint ranges, sources, S3 settings,
a stored harvest's manifest) print one line naming the file and key and exit with code 2, before
Prefect, torch or Ray is imported (--dry-run runs the same checks); a failing flow prints its error
and exits with code 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from saeflow.spec_input import SpecError, build_spec, check_spec

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_API_URL = "http://127.0.0.1:4200/api"


# The flow function of each command, imported by name: the import (~3-5 s of Prefect, torch,
# transformers) overlaps the temporary Prefect server's start-up instead of following it.
FLOW_FUNCTIONS = {
    "demo": ("flows.demo", "demo"),
    "synthetic-demo": ("flows.synthetic_demo", "synthetic_demo"),
    "harvest": ("flows.harvest", "harvest"),
    "sweep": ("flows.sweep", "sweep"),
    "features": ("flows.features", "features"),
    "steer": ("flows.steer", "steer"),
    "diff": ("flows.diff", "diff"),
}


def flow_function(command: str) -> Callable[[BaseModel], Any]:
    """The @flow function a command runs."""
    module, name = FLOW_FUNCTIONS[command]
    return getattr(importlib.import_module(module), name)


def run_flow(command: str, spec: BaseModel) -> list[tuple[str, str]]:
    """Run the flow now; returns (label, uri) pairs to print, the main result first (flows.results)."""
    return flow_function(command)(spec).outputs()


def one_line(error: BaseException) -> str:
    """The root error as one line (a Ray task error carries the remote traceback; its cause is the error)."""
    cause = getattr(error, "cause", None)
    error = cause if isinstance(cause, BaseException) else error
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def cmd_flow(args: argparse.Namespace) -> int:
    try:
        spec = build_spec(args.command, args.spec, args.set or [])
        check_spec(spec, args.spec, args.set or [])  # also for --dry-run: it promises a spec that can run
    except SpecError as error:
        print(f"saeflow {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        from saeflow.plan_cost import cost_lines

        print(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), end="")
        # The cost as YAML comments: the output stays a spec that can be saved and run.
        print("".join(f"# {line}\n" for line in cost_lines(args.command, spec)), end="")
        return EXIT_OK
    from saeflow.runtime import EXIT_INTERRUPTED, run_from_terminal

    try:
        outputs = run_from_terminal(lambda: run_flow(args.command, spec), args.command,
                                    while_starting=lambda: flow_function(args.command))
    except Exception as error:  # noqa: BLE001 - the CLI reports, the traceback is in the Prefect logs
        if args.traceback:
            raise
        print(f"saeflow {args.command}: failed: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    if outputs == EXIT_INTERRUPTED:
        return EXIT_INTERRUPTED
    for label, uri in outputs:
        print(f"{label}: {uri}")
    return EXIT_OK


# --------------------------------------------------------------------------- query


def cmd_query(args: argparse.Namespace) -> int:
    from saeflow.query import cmd_query as run_query

    return run_query(args)


# --------------------------------------------------------------------------- serve / deploy


def serve_argv(args: argparse.Namespace) -> list[str]:
    """saeflow.serve.main's argv from the options parsed here (argparse.REMAINDER refused '--no-server')."""
    argv = ["--port", str(args.port)]
    if args.pool:
        argv += ["--pool", args.pool]
    return argv + (["--no-server"] if args.no_server else [])


def cmd_serve(args: argparse.Namespace) -> int:
    from saeflow import serve

    try:
        result = serve.main(serve_argv(args))
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as error:  # noqa: BLE001 - server/worker start failures: one line, logs are in the message
        if args.traceback:
            raise
        print(f"saeflow serve: failed: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


def server_answers(api_url: str, timeout: float = 3.0) -> bool:
    """Whether anything answers HTTP at api_url (any status: Cloud may refuse /health without a key)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def cmd_deploy(args: argparse.Namespace) -> int:
    from saeflow import serve

    api_url = args.api_url or os.environ.get("PREFECT_API_URL") or DEFAULT_API_URL
    # `prefect deploy` against no server ends in a long traceback; say it in one line instead.
    if not server_answers(api_url):
        print(f"saeflow deploy: error: no Prefect server answers at {api_url}: start one with `saeflow serve` "
              "or pass --api-url (or set PREFECT_API_URL)", file=sys.stderr)
        return EXIT_FAILED
    try:
        names = serve.deploy_all(api_url)
    except Exception as error:  # noqa: BLE001 - prefect deploy's own output is long; keep its last line
        if args.traceback:
            raise
        print(f"saeflow deploy: failed: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    for name in names or []:
        print(f"deployed: {name}")
    return EXIT_OK



# --------------------------------------------------------------------------- parser


FLOW_HELP = {
    "demo": "The whole pipeline offline on embedded defaults (DemoSpec): harvest, sweep, diff, reports.",
    "synthetic-demo": "SAEs of every architecture on synthetic activations with known features (SyntheticDemoSpec).",
    "harvest": "Harvest LM activations to Parquet (HarvestSpec) and print the harvest URI.",
    "sweep": "Train and evaluate a grid of SAEs on a harvest (SweepSpec) and print the report/results URIs.",
    "diff": "Diff two or more checkpoints with a crosscoder (DiffSpec) and print the report URI.",
    "features": "Top examples, histograms, logit lens and ablations of every latent of an SAE or sweep (FeaturesSpec); prints the browser URI.",
    "steer": "Generate with SAE latents added/clamped or a contrastive vector added, beside the baseline; ablations (SteerSpec); prints the report URI.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saeflow", description="Harvest activations, train SAE sweeps, diff checkpoints (Prefect flows on Ray).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Spec keys are the fields of HarvestSpec / SweepSpec / DiffSpec; --dry-run prints the resolved spec.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, text in FLOW_HELP.items():
        flow_parser = sub.add_parser(command, help=text, description=text)
        flow_parser.add_argument("spec", nargs="?", metavar="SPEC.yaml", help="YAML mapping of spec fields (defaults when omitted).")
        flow_parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                                 help="Override a spec field; VALUE is parsed as YAML, dotted KEY for nested specs "
                                      "(e.g. --set harvest_spec.num_tokens=1000). Repeatable.")
        flow_parser.add_argument("--dry-run", action="store_true", help="Validate, print the resolved spec as YAML and what it will cost "
                                 "(tokens, points, groups, storage, device time where measured); run nothing.")
        flow_parser.add_argument("--traceback", action="store_true", help="Re-raise flow failures with the full traceback.")
        flow_parser.set_defaults(handler=cmd_flow)

    query = sub.add_parser("query", help="Print a sample of stored activations, or a sweep results table.",
                           description="Print a sample of stored activations (Arrow), or a sweep results table.")
    query.add_argument("uri", nargs="?", metavar="HARVEST_URI", help="Harvest folder (path, file:// or s3:// URL).")
    query.add_argument("--results", metavar="RESULTS.parquet", help="Print this sweep results table instead.")
    query.add_argument("--hookpoint", help="Hookpoint to read (default: the harvest's first).")
    query.add_argument("--seq-id", type=int, help="Only rows of this context.")
    query.add_argument("--token-id", type=int, help="Only rows of this token id.")
    query.add_argument("--limit", type=int, default=10, help="Most rows to print (default 10).")
    query.add_argument("--values", type=int, default=4, help="Activation values shown per row (default 4, 0 hides them).")
    query.add_argument("--columns", help="Comma-separated results columns to show (default: all).")
    query.set_defaults(handler=cmd_query)

    serve = sub.add_parser("serve", help="Start the Prefect server, work pool and worker (saeflow.serve.main).",
                           description="Start the Prefect server, work pool and worker (saeflow.serve.main).")
    # Explicit options, not argparse.REMAINDER: REMAINDER after a subcommand rejects '--no-server'.
    serve.add_argument("--port", type=int, default=4200, help="Port of the local server on 127.0.0.1 (default 4200).")
    serve.add_argument("--pool", help="Process work pool of the worker (default: saeflow.serve's saeflow-local).")
    serve.add_argument("--no-server", action="store_true",
                       help="Start no server: use the one at PREFECT_API_URL (shared server / Prefect Cloud).")
    serve.add_argument("--traceback", action="store_true", help="Re-raise failures with the full traceback.")
    serve.set_defaults(handler=cmd_serve)
    deploy = sub.add_parser("deploy", help="Register the harvest/sweep/diff deployments (saeflow.serve.deploy_all).",
                            description="Register the harvest/sweep/diff deployments (saeflow.serve.deploy_all).")
    deploy.add_argument("--api-url", help=f"Prefect API URL (default: $PREFECT_API_URL or {DEFAULT_API_URL}).")
    deploy.add_argument("--traceback", action="store_true", help="Re-raise failures with the full traceback.")
    deploy.set_defaults(handler=cmd_deploy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse usage errors return 2 too)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
