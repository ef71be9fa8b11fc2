#!/usr/bin/env bash
# Deployment-mode check (manual, not part of `make test`: ~2.5 min on 2 cores): one SuperLink and
# 7 SuperNodes on this machine, the smoke HASA run through `flwr run . deploy`, then its record
# compared bit for bit with the in-process engine. Each SuperNode gets only its partition file and
# the vocabulary file (`python -m hasa_flower node-files`), and neither the SuperNodes nor the
# SuperLink can see the data set (their HASA_DATA_DIR is an empty folder). Every process it starts is
# ended on exit, and nothing else: the SuperLink and each SuperNode start in a session of their own
# (setsid; in a script without job control $! is then the session and process-group id), and on
# exit those process groups (each with the SuperExec and app processes it spawned) are ended by id.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
export PATH="$repo/.venv/bin:$PATH" FLWR_HOME="$work/home" FLWR_TELEMETRY_ENABLED=0
export HASA_DATA_DIR="${HASA_DATA_DIR:-$repo/data}"   # for node-files and the in-process run only
run_config="rounds=2 eval-every=1"
started=()
cleanup() {
  local g
  for g in "${started[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for _ in $(seq 20); do
    local left=0
    for g in "${started[@]}"; do kill -0 -- "-$g" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  for g in "${started[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$FLWR_HOME" "$work/no-data"
python -m hasa_flower node-files --out "$work/nodes" --run-config "$run_config"
cat > "$FLWR_HOME/config.toml" <<'T'
[superlink]
default = "deploy"

[superlink.deploy]
address = "127.0.0.1:8000"
insecure = true
T
HASA_DATA_DIR="$work/no-data" setsid flower-superlink --insecure --disable-runtime-dependency-installation > "$work/superlink.log" 2>&1 &
started+=($!)
sleep 8
for k in 0 1 2 3 4 5 6; do
  HASA_DATA_DIR="$work/no-data" setsid flower-supernode --insecure --superlink 127.0.0.1:8000 --port $((9100 + k)) \
      --node-config "vocab-file='$work/nodes/vocab.json' partition-file='$work/nodes/partition-$k.npz'" \
      > "$work/node$k.log" 2>&1 &
  started+=($!)
done
sleep 8
flwr run . deploy --stream --run-config "$run_config results-dir='$work/results'" | grep -a "record written"
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
