"""Fixtures shared by the test modules."""
import pytest

import hasa_core as H


@pytest.fixture(scope="module")
def tiny_cfg():
    """A two-round smoke config with a 16-unit LSTM on 30 examples per client: seconds per run."""
    return H.config("smoke", rounds=2, max_examples_per_client=30, emb_dim=16, hidden_dim=16)
