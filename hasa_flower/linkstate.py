"""An indexed in-memory link state for Flower's Simulation Engine: each node's next message without a scan.

flwr 1.42's ``InMemoryLinkState.get_message_ins(node_id, limit)`` walks every message the link state
holds (sent, and not yet answered and pulled), checking each under the state's lock, to find the
few addressed to ``node_id``. The Simulation Engine (``vce_api.add_messages_to_queue``) asks it
once per node every 0.1 s, so a cycle costs nodes x messages held: at 1,000 nodes this was about
6 ms per message sent (docs/flower-linkstate.md).

:class:`IndexedLinkState` is ``InMemoryLinkState`` plus, per destination node, the ids of its
messages not yet delivered, in the order they were stored (flwr's own
``InMemoryCoreState.pending_message_ids_by_dst`` in 1.42's supercore): added in
``store_message_ins``, removed on delivery (``get_message_ins``) and by ``delete_messages``, which
every deletion goes through (the server's pull, expiry and invalidation in
``_check_stored_messages``, the end of a push session, ``cleanup_run``). ``get_message_ins``
answers from that node's entries alone, checking each as flwr does. Only time changes: the same
messages, in the same order, marked delivered at the same instants. One difference, invisible to
a caller: flwr's scan also deletes other nodes' expired messages it walks past; here those wait
until a call that reads them (any read checks expiry first, so it finds them gone either way).
tests/test_linkstate.py compares both over random sequences of pushes, deliveries, replies,
pulls, deletions and expiries.

The patch is written for one flwr version (:data:`FLWR_VERSION`): on another, :func:`indexed` and
:func:`index_state` warn and leave flwr's own link state in place (records do not depend on it).
:func:`indexed` makes the link states created in its block indexed (``run_simulation`` creates one
per run: :func:`hasa_flower.simulation.run`); :func:`index_state` turns one already created
into an indexed one (``flwr run``: the ServerApp gets a grid over a link state made before it).

Imports: flwr.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import warnings

import flwr
from flwr.app import Message
from flwr.server.superlink.linkstate import in_memory_linkstate as _base
from flwr.server.superlink.linkstate import linkstate_factory as _factory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

FLWR_VERSION = "1.42.0"
"""The flwr release whose ``InMemoryLinkState`` :class:`IndexedLinkState` was written against
(and compared with, in tests/test_linkstate.py)."""

log = logging.getLogger(__name__)


class IndexedLinkState(InMemoryLinkState):
    """flwr 1.42's ``InMemoryLinkState`` with a per-node index of the messages not yet delivered
    (``pending``: node id -> {message id: None}, in the order stored), so that
    :meth:`get_message_ins` reads one node's messages instead of all of them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[int, dict[str, None]] = {}

    def _index(self) -> None:
        """Rebuild :attr:`pending` from the stored messages (an instance made before it was indexed)."""
        with self.lock:
            self.pending = {}
            for msg_id, msg in self.message_ins_store.items():
                if msg.metadata.delivered_at == "":
                    self.pending.setdefault(msg.metadata.dst_node_id, {})[msg_id] = None

    def store_message_ins(self, message: Message) -> str | None:
        with self.lock:  # reentrant: flwr's own method takes it again
            message_id = super().store_message_ins(message)
            if (message_id is not None and self.message_ins_store.get(message_id) is message
                    and message.metadata.delivered_at == ""):
                self.pending.setdefault(message.metadata.dst_node_id, {})[message_id] = None
        return message_id

    def get_message_ins(self, node_id: int, limit: int | None, *, run_id: int | None = None) -> list[Message]:
        """flwr's ``get_message_ins``, read from ``node_id``'s entries of the index: its messages not
        yet delivered (of run ``run_id`` when given; at most ``limit``), oldest first, each checked
        (expiry, federation) as flwr checks it, and marked delivered."""
        if limit is not None and limit < 1:
            raise AssertionError("`limit` must be >= 1")
        found: list[Message] = []
        with self.lock:
            pending = self.pending.get(node_id)
            for msg_id in list(pending or ()):
                self._check_stored_messages({msg_id})  # may delete it (expired, or left the federation)
                msg = self.message_ins_store.get(msg_id)
                if msg is None or msg.metadata.delivered_at != "" or msg.metadata.dst_node_id != node_id:
                    pending.pop(msg_id, None)  # gone or delivered by other means: not pending any more
                    continue
                if run_id is None or msg.metadata.run_id == run_id:
                    found.append(msg)
                    del pending[msg_id]
                if limit and len(found) == limit:
                    break
            if pending is not None and not pending:
                self.pending.pop(node_id, None)
        if found:
            delivered_at = _base.now().isoformat()
            for msg in found:
                msg.metadata.delivered_at = delivered_at
        return found

    def delete_messages(self, message_ins_ids: set[str]) -> None:
        if not message_ins_ids:
            return
        with self.lock:
            for msg_id in message_ins_ids:
                if (msg := self.message_ins_store.get(msg_id)) is not None:
                    pending = self.pending.get(msg.metadata.dst_node_id)
                    if pending is not None:
                        pending.pop(msg_id, None)
                        if not pending:
                            del self.pending[msg.metadata.dst_node_id]
            super().delete_messages(message_ins_ids)


def supported(version: str | None = None) -> bool:
    """Whether :class:`IndexedLinkState` was written for this flwr ``version`` (default: the one
    installed); on another, warn (RuntimeWarning, and the log) that flwr's own link state stays."""
    version = flwr.__version__ if version is None else version
    if version == FLWR_VERSION:
        return True
    text = (f"hasa_flower.linkstate was written for flwr {FLWR_VERSION}, and flwr {version} is installed: "
            "flwr's own InMemoryLinkState stays (the same records, but its get_message_ins scans every "
            "message held, once per node and poll: slow at many clients)")
    warnings.warn(text, RuntimeWarning, stacklevel=3)
    log.warning(text)
    return False


_installed = threading.Lock()


@contextlib.contextmanager
def indexed(enabled: bool = True, version: str | None = None):
    """While the block runs, every in-memory link state that flwr's ``LinkStateFactory`` creates
    (``run_simulation`` creates one per run) is an :class:`IndexedLinkState`. Nothing changes when
    ``enabled`` is false, or (with a warning, :func:`supported`) when the installed flwr is not
    :data:`FLWR_VERSION`. Yields whether the index is in use. One block at a time per process."""
    if not (enabled and supported(version)):
        yield False
        return
    with _installed:
        saved = _factory.InMemoryLinkState
        _factory.InMemoryLinkState = IndexedLinkState
        try:
            yield True
        finally:
            _factory.InMemoryLinkState = saved


def index_state(state: object, version: str | None = None) -> bool:
    """Turn ``state``, a link state already in use, into an :class:`IndexedLinkState` in place (its
    index built from the messages it holds, under its lock) when it is flwr's own
    ``InMemoryLinkState`` and flwr is :data:`FLWR_VERSION` (else a warning, :func:`supported`);
    returns whether it is indexed now. Any other state (a deployment's SQL or remote one) is
    left alone."""
    if isinstance(state, IndexedLinkState):
        return True
    if type(state) is not InMemoryLinkState or not supported(version):
        return False
    with state.lock:
        state.__class__ = IndexedLinkState
        state._index()
    return True
