"""Writes results/scale_engines_before.csv: notebook 08's 1,000-client measurement made with the code
before issue 20's changes (commit 5e4cf78), each engine in a fresh process of its own, as
``hasa_flower.compare_engines`` measures them now.

    git worktree add /tmp/hasa-before 5e4cf78   # then link data/ into it as in .ci/run
    python results/scale_engines_before.py /tmp/hasa-before results/scale_engines_before.csv
"""
import json
import subprocess
import sys

import pandas as pd

CHILD = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import hasa_core as H, hasa_flower as F
assert F.__file__.startswith(sys.argv[1]), F.__file__
cfg = H.many_clients_config("paper", "digits", policy="hasa")
load0, t0 = os.getloadavg()[0], time.perf_counter()
with F.ResourceSampler() as res:
    rec = H.run(cfg, 0) if sys.argv[2] == "in-process" else F.run(cfg, 0, backend="ray")
wall, rs = time.perf_counter() - t0, np.asarray(rec["round_seconds"])
print(json.dumps({"wall seconds": wall, "seconds per round (median)": float(np.median(rs)),
                  "seconds per round (p90)": float(np.quantile(rs, 0.9)),
                  "seconds outside training rounds": wall - float(rs.sum()),
                  "CPU seconds (all processes)": res.cpu_seconds, "peak RSS MiB (all processes)": res.peak_rss_mib,
                  "load average before": load0, "load average after": os.getloadavg()[0],
                  "params_sha256": rec["params_sha256"]}))
'''

if __name__ == "__main__":
    before, out = sys.argv[1], sys.argv[2]
    rows = {}
    for engine in ("in-process", "flower"):
        done = subprocess.run([sys.executable, "-c", CHILD, before, engine], capture_output=True, text=True, check=True)
        rows[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    df = pd.DataFrame(rows).T
    if df["params_sha256"].nunique() != 1:
        raise SystemExit(f"the engines disagree: {df['params_sha256'].tolist()}")
    df.drop(columns="params_sha256").to_csv(out)
    print(df.drop(columns="params_sha256").T)
