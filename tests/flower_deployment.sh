#!/usr/bin/env bash
# Deployment-mode check (manual, not part of `make test`: ~2.5 min on 2 cores): one SuperLink and
# 7 SuperNodes on this machine (partition-id 0..6), the smoke HASA run through `flwr run . deploy`,
# then its record compared bit for bit with the in-process engine. Every process it starts is
# ended on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
export PATH="$repo/.venv/bin:$PATH" FLWR_HOME="$work/home" FLWR_TELEMETRY_ENABLED=0
export HASA_DATA_DIR="${HASA_DATA_DIR:-$repo/data}"   # where each SuperNode finds its data
trap 'pkill -f "flower-supernode|flower-superlink|flower-superexec|flwr-clientapp|flwr-serverapp" || true; rm -rf "$work"' EXIT
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<'T'
[superlink]
default = "deploy"

[superlink.deploy]
address = "127.0.0.1:8000"
insecure = true
T
flower-superlink --insecure --disable-runtime-dependency-installation > "$work/superlink.log" 2>&1 &
sleep 8
for k in 0 1 2 3 4 5 6; do
  flower-supernode --insecure --superlink 127.0.0.1:8000 --port $((9100 + k)) \
      --node-config "partition-id=$k num-partitions=7" > "$work/node$k.log" 2>&1 &
done
sleep 8
flwr run . deploy --stream --run-config "rounds=2 eval-every=1 results-dir='$work/results'" | grep -a "record written"
python - "$work/results" <<'P'
import json, sys
from pathlib import Path
import hasa_core as H
path = next(Path(sys.argv[1]).glob("runs/*/seed0.json"))
rec = json.loads(path.read_text())
ref = H.run(H.RunConfig.from_dict(rec["config"]), 0)
same = rec["params_sha256"] == ref["params_sha256"] and rec["curve"] == ref["curve"]
print(f"deployment record == in-process record: {same}")
sys.exit(0 if same else 1)
P
