"""``python -m ppml_operator``: run the operator (kopf) against the current cluster.

Usage::

    python -m ppml_operator [--namespace NS ...] [--liveness-port PORT] [--metrics-port PORT]

Connects with ``KUBECONFIG`` (or ``~/.kube/config``) when present, the in-cluster service
account otherwise; watches all namespaces unless ``--namespace`` restricts it. Settings for
tests and tuning come from ``PPML_*`` variables (see :mod:`ppml_operator.handlers.config`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m ppml_operator", description=__doc__)
    parser.add_argument(
        "--namespace", "-n", action="append", default=[],
        help="watch only this namespace (repeatable); all namespaces by default",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig path (default: $KUBECONFIG, in-cluster)"
    )
    parser.add_argument(
        "--liveness-port", type=int, default=None,
        help="serve kopf's liveness probe on http://0.0.0.0:PORT/healthz",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None,
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the operator until it is stopped."""
    args = parse_args(argv)
    if args.kubeconfig:
        # kopf and the kubernetes client read KUBECONFIG at import time (DESIGN §8).
        os.environ["KUBECONFIG"] = args.kubeconfig
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    import kopf

    from ppml_operator import metrics
    from ppml_operator.handlers import register  # noqa: F401  (registers the handlers)

    if args.metrics_port is not None:
        metrics.serve(args.metrics_port)
    liveness = (
        f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=liveness,
            standalone=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
