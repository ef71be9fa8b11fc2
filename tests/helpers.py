"""Small builders shared by the test modules."""
import torch

import hasa_core as H


def smoke(**changes):
    """A two-round smoke-profile config on 40 examples per client, plus ``changes``."""
    return H.config("smoke", **{"rounds": 2, "eval_every": 1, "max_examples_per_client": 40, **changes})


def tiny_lstm(vocab=5, emb=4, hid=4):
    return H.lstm_arch(vocab, emb, hid)


def counting_params(arch):
    """Parameters whose every element equals its flat position: slices are easy to read."""
    return {n: torch.arange(p.numel(), dtype=torch.float32).view_as(p)
            for n, p in arch.init(arch.dims, torch.Generator().manual_seed(0)).items()}
