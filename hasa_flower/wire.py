"""The wire format of the HASA Flower app: tensors <-> ArrayRecord, a run's config <-> ConfigRecord.

Imports: flwr, :mod:`hasa_core`.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

import hasa_core as H


def to_record(params: dict[str, torch.Tensor]) -> ArrayRecord:
    """Tensors -> ArrayRecord (exact: float32 bytes are copied, not converted)."""
    return ArrayRecord.from_torch_state_dict({n: t.contiguous() for n, t in params.items()})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """ArrayRecord -> tensors, copied: Flower's arrays are read-only views of the message bytes."""
    return {n: t.clone() for n, t in record.to_torch_state_dict().items()}


@functools.lru_cache(maxsize=8)
def _config_json(cfg: H.RunConfig) -> str:
    return json.dumps(cfg.as_dict())


@functools.lru_cache(maxsize=8)
def _config_of(text: str) -> H.RunConfig:
    return H.RunConfig.from_dict(json.loads(text))


def config_record(cfg: H.RunConfig, seed: int, **items: Any) -> ConfigRecord:
    """The run's identity travels with every message, so a client needs no run_config (its JSON
    is made once per config, not once per message)."""
    return ConfigRecord({"hasa-config": _config_json(cfg), "seed": seed, **items})


def read_config(record: ConfigRecord) -> tuple[H.RunConfig, int]:
    """(config, seed) of a message; the config is parsed and validated once per process and config."""
    return _config_of(str(record["hasa-config"])), int(record["seed"])


def int_array(x: np.ndarray) -> Array:
    return Array.from_numpy_ndarray(np.ascontiguousarray(x, dtype=np.int64))


def partition_id(reply: Message) -> int:
    if reply.has_error():
        raise RuntimeError(f"node {reply.metadata.src_node_id} failed: {reply.error.reason}")
    return int(reply.content["reply"]["partition-id"])
