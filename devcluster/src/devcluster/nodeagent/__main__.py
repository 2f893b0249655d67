"""Entry point of the node agent: ``python -m devcluster.nodeagent --state-dir DIR``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from devcluster.nodeagent.agent import Agent
from devcluster.paths import Paths


def main() -> None:
    """Parse arguments and run the agent forever."""
    ap = argparse.ArgumentParser(prog="python -m devcluster.nodeagent")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--fake-gpus-file", type=Path, default=None)
    ap.add_argument("--nodes-file", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    Agent(Paths(args.state_dir.resolve()), fake_gpus_file=args.fake_gpus_file,
          nodes_file=args.nodes_file).run()


if __name__ == "__main__":
    main()
