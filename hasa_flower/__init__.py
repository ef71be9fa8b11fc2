"""HASA on Flower's Message API (flwr 1.42.0, pinned): a ``Strategy``, a ``ClientApp`` and a ``ServerApp``.

Every number comes from :mod:`hasa_core`; this package only moves tensors and statistics between
a server and its clients. A run here gives the same record as :func:`hasa_core.run` (same
widths, same accuracies, bit-identical parameters), because

* each client's randomness is its own, derived from (seed, round, client)
  (:func:`hasa_core.client_generators`), so it does not matter where or in which order clients train;
* clients train with one intra-op thread (:func:`hasa_core.train_subnet`);
* the server aggregates with :func:`hasa_core.aggregate`, whose float64 accumulator makes the
  result independent of the order of the replies (Flower's own ``aggregate_arrayrecords`` sums in
  float32, and its result depends on the order).

The protocol of one run:

1. **query**: every node replies with its ``partition-id`` (a ServerApp never sees node configs),
   its n_k and its two histograms (:class:`hasa_core.ClientStatistics`: a privacy cost, see the
   README). The server computes the scores and widths from these alone (:func:`hasa_core.plan`
   on :class:`hasa_core.Statistics`); the score ``loss`` needs the data and is refused.
2. **train**, each round: the round's :func:`hasa_core.participants` each get their subnet (the
   server extracts it; the client never sees the rest of the model) and the round number; they
   reply with the trained subnet and n_k.
3. **evaluate**, at :func:`hasa_core.evaluation_rounds`: every client gets the static slice of
   the global model at its width and replies with its test accuracy; after the last round it gets
   the whole model and also replies with the full model's accuracy.

Three ways to run it: :func:`run` (Python, notebooks; ``backend="ray"`` is Flower's Simulation
Engine, ``backend="local"`` delivers the same messages in this process, no Ray), and
``flwr run .`` (the ``[tool.flwr.app]`` section of pyproject.toml), best through ``make flwr-run``
(:func:`flwr_run`: its own SuperLink, ended afterwards, and an exit code that says whether the
run failed; see the README).

Where a node's data come from: in a simulation every node draws the benchmark's partition from the
data set (who holds which examples: :func:`hasa_core.partition`) and builds only the clients it
serves, the first time it serves each, keeping them. A deployed SuperNode started with
``--node-config "vocab-file=... partition-file=..."`` builds its client from those two files alone
(:func:`hasa_core.node_task`; it never opens the data set), which ``python -m hasa_flower
node-files --out DIR --run-config "..."`` writes for the run (:func:`write_node_files`); files
written for another seed, data config or data set fail the node with one message.

The package follows Flower's app template, one job per module: ``wire`` (tensors and configs on the
wire), ``dataset`` (a node's client; node files), ``client_app``, ``strategy``, ``server_app``,
``simulation`` (running from Python) and ``deploy`` (``flwr run``, node files for a run).
Measuring the app is :mod:`hasa_bench`'s job. Imports: flwr, :mod:`hasa_core`, :mod:`hasa_records`.
"""
import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # before flwr is imported: no telemetry
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a FutureWarning of Ray

from hasa_flower.dataset import write_node_files  # noqa: E402
from hasa_flower.deploy import failed_runs, flwr_run, write_run_node_files  # noqa: E402
from hasa_flower.server_app import serve  # noqa: E402
from hasa_flower.simulation import POLL, WINDOW, LocalGrid, StoppableGrid, Stopped, cached_run, run  # noqa: E402

__all__ = ["serve", "run", "cached_run", "LocalGrid", "StoppableGrid", "Stopped", "WINDOW", "POLL", "flwr_run",
           "failed_runs", "write_node_files", "write_run_node_files"]
