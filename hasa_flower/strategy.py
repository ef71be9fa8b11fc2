"""The HASA strategy: width-sliced FedAvg with fixed per-client widths, on Flower's Message API.

The server extracts each participant's subnet (:func:`hasa_core.subnet_indices`), aggregates the
replies with :func:`hasa_core.aggregate` (float64 accumulators: the result does not depend on the
order of the replies) and collects the learning curve.

Imports: flwr, :mod:`hasa_core`, :mod:`hasa_flower.wire`.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

import hasa_core as H
from hasa_flower.wire import config_record, from_record, partition_id, to_record


class HasaStrategy(Strategy):
    """Width-sliced FedAvg with fixed per-client widths (HASA or any baseline of ``cfg.policy``).

    ``nodes[k]`` is the node id of partition k. Collects the learning curve (per-client accuracies
    at :func:`hasa_core.evaluation_rounds`) and, after the last round, the full model's accuracies."""

    def __init__(self, cfg: H.RunConfig, seed: int, arch: H.Architecture, widths: Sequence[float],
                 nodes: Sequence[int], held: Sequence[dict[str, torch.Tensor]] | None = None):
        if cfg.q > 0:
            raise ValueError("q-FFL (q > 0) needs each client's loss before its local steps, which this app's "
                             "messages do not carry: run it in-process (hasa_core.run)")
        self.cfg, self.seed, self.arch, self.held = cfg, seed, arch, held
        self.widths, self.nodes = [float(w) for w in widths], list(nodes)
        self.at = H.evaluation_rounds(cfg)
        self.curve: list[dict[str, Any]] = []
        self.accuracy_full_model: list[float] = []
        self._sent: dict[str, torch.Tensor] = {}     # the global parameters of this round
        self._indices: dict[int, H.Indices] = {}     # partition -> the units it was sent
        self.round_seconds: list[float] = []  # per round: configure, clients' training, aggregation

    def summary(self) -> None:
        pass

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        rnd, params = server_round - 1, from_record(arrays)
        self._sent, self._indices = params, {}
        self._t0 = time.perf_counter()
        messages = []
        for k in H.participants(self.cfg, self.seed, rnd, len(self.nodes)):
            w = self.widths[k]
            self._indices[int(k)] = idx = H.subnet_indices(self.arch, self.cfg, w, rnd, int(k), self.seed)
            content = RecordDict({"subnet": to_record(H.extract(params, self.arch, idx)),
                                  "config": config_record(self.cfg, self.seed, round=rnd, width=w,
                                                          **{"partition-id": int(k)})})
            messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=self.nodes[k]))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates, expected, order = [], set(self._indices), []
        for reply in replies:
            k = partition_id(reply)
            expected.discard(k)
            order.append(k)
            updates.append((from_record(reply.content["subnet"]), self._indices[k],
                            float(reply.content["metrics"]["num-examples"])))
        if expected:
            raise RuntimeError(f"round {server_round}: no reply from partitions {sorted(expected)}")
        held = [self.held[k] for k in order] if self.held else None
        new = H.aggregate(self._sent, self.arch, updates, self.cfg.aggregation, self.cfg.weighting, held)
        self.round_seconds.append(time.perf_counter() - self._t0)
        return to_record(new), MetricRecord({"clients": len(updates)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if server_round not in self.at:
            return []
        if server_round == self.cfg.rounds:  # the whole model: accuracy at w_k and at full width
            def whole(w: float) -> RecordDict:
                return RecordDict({"model": arrays, "config": config_record(self.cfg, self.seed, widths=[w, 1.0])})
            return [Message(content=whole(w), message_type=MessageType.EVALUATE, dst_node_id=node)
                    for node, w in zip(self.nodes, self.widths)]
        params, messages, slices = from_record(arrays), [], {}
        for node, w in zip(self.nodes, self.widths):  # only the static width-w_k slice the client is scored with
            units = tuple(sorted(self.arch.units(w).items()))
            if units not in slices:  # clients with the same unit counts get the same slice: made once
                idx = H.client_indices("static", self.arch, w, 0, None)
                slices[units] = to_record(H.extract(params, self.arch, idx))
            messages.append(Message(content=RecordDict({"model": slices[units], "config": config_record(
                self.cfg, self.seed, widths=[w], sliced=True)}), message_type=MessageType.EVALUATE, dst_node_id=node))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if server_round not in self.at:
            return None
        acc = [np.nan] * len(self.nodes)
        full = [np.nan] * len(self.nodes)
        for reply in replies:
            k = partition_id(reply)
            acc[k] = float(reply.content["metrics"]["accuracy-0"])
            if server_round == self.cfg.rounds:
                full[k] = float(reply.content["metrics"]["accuracy-1"])
        missing = [k for k, a in enumerate(acc) if np.isnan(a)]
        if missing:
            raise RuntimeError(f"round {server_round}: no evaluation from partitions {missing}")
        summary = H.summarize_accuracies(acc)
        self.curve.append({"round": server_round, "accuracy": acc, **summary})
        if server_round == self.cfg.rounds:
            self.accuracy_full_model = full
        return MetricRecord(summary)
