"""Writes results/scale_engines_before.csv: notebook 08's 1,000-client measurement made with the code
of another commit, each engine in a fresh process of its own, by THIS checkout's harness
(``hasa_bench._measured_run``: RSS and PSS summed, the training rounds' wall time, flwr's
link-state clock; the flower row also holds the clock's ``flwr link state: <method>, calls`` and
``..., seconds``). The before of the indexed link state is commit 0d69896 (flwr's scan of every
message per node, every actor keeping the float32 clients it served, each process its own digit
pools, a window of 64 messages polled every 0.02 s):

    mkdir /tmp/hasa-before && git archive 0d69896 | tar -x -C /tmp/hasa-before
    ln -s "$PWD"/data/{digits,medium_data.csv,shakespeare} /tmp/hasa-before/data/   # data as in .ci/run
    python results/scale_engines_before.py /tmp/hasa-before results/scale_engines_before.csv

(The earlier before, commit 5e4cf78, measured by the harness of its time,
``git show 0d69896:results/scale_engines_before.py``: scale_engines_before_5e4cf78.csv.)
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

CHILD = r'''
import importlib.util, json, os, sys
before, harness, engine = sys.argv[1:4]
sys.path.insert(0, before)
import hasa_core as H, hasa_flower.simulation as S
assert H.__file__.startswith(before) and S.__file__.startswith(before), (H.__file__, S.__file__)
assert os.environ["PYTHONPATH"] == before and os.getcwd() == before  # what the Ray actors import from
if not hasattr(S, "POLL"):
    S.POLL = 0.02  # what the older StoppableGrid polls; the harness imports the name
spec = importlib.util.spec_from_file_location("hasa_bench_now", harness)
B = importlib.util.module_from_spec(spec)
spec.loader.exec_module(B)
cfg = H.many_clients_config("paper", "digits", policy="hasa")
row, rec, calls = B._measured_run(engine, cfg, 0, None, S.WINDOW)
if engine == "flower":
    row.update({f"flwr link state: {name}, {what}": v for name, (n, sec) in calls.items()
                for what, v in (("calls", n), ("seconds", sec))})
print(json.dumps({**row, "params_sha256": rec["params_sha256"]}))
'''

if __name__ == "__main__":
    before, out = sys.argv[1], sys.argv[2]
    harness = str(Path(__file__).resolve().parents[1] / "hasa_bench.py")
    rows = {}
    for engine in ("in-process", "flower"):
        # the Ray actors import the app as the child does: from the checkout alone (its folder, its path)
        env = {**os.environ, "PYTHONPATH": before}
        done = subprocess.run([sys.executable, "-c", CHILD, before, harness, engine], capture_output=True, text=True,
                              cwd=before, env=env)
        if done.returncode:
            raise SystemExit(done.stderr[-4000:])
        rows[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    df = pd.DataFrame(rows).T
    if df["params_sha256"].nunique() != 1:
        raise SystemExit(f"the engines disagree: {df['params_sha256'].tolist()}")
    df.drop(columns="params_sha256").to_csv(out)
    print(df.drop(columns="params_sha256").T)
