"""``python -m hasa_flower flwr-run | node-files``: the Flower app's command line."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import hasa_core as H
from hasa_flower.dataset import VOCAB_FILE, partition_file_name
from hasa_flower.deploy import flwr_run, write_run_node_files


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m hasa_flower", description="The HASA Flower app's commands.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("flwr-run", help="`flwr run` of this app on a SuperLink of its own; exits 1 when the run failed")
    r.add_argument("--run-config", default="",
                   help="passed to `flwr run --run-config`, e.g. \"policy='uniform' rounds=2\"")
    r.add_argument("--num-supernodes", type=int, default=7, help="simulated SuperNodes (the benchmark's clients)")
    n = sub.add_parser("node-files", help=f"write each SuperNode's files for a run: {VOCAB_FILE} for every "
                       f"node and {partition_file_name(0)}, ... (one per client, its data only)")
    n.add_argument("--out", type=Path, required=True, help="the folder to write them to")
    n.add_argument("--run-config", default="",
                   help="the run's `flwr run --run-config` overrides, e.g. \"seed=1 profile='paper'\"")
    args = ap.parse_args(argv)
    if args.cmd == "flwr-run":
        raise SystemExit(flwr_run(args.run_config, args.num_supernodes))
    if args.cmd == "node-files":
        try:
            paths = write_run_node_files(args.out, args.run_config)
        except (ValueError, H.DataError) as e:
            raise SystemExit(f"node-files: {e}")
        made_by = json.loads(paths[0].read_text())["made_by"]
        print(f"wrote {paths[0]} and {len(paths) - 1} partition files ({', '.join(p.name for p in paths[1:3])}, ...) "
              f"for {made_by['benchmark']}, seed {made_by['seed']}, data config key {made_by['config_key']}")


if __name__ == "__main__":
    main()
