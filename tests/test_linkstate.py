"""The indexed link state (:mod:`hasa_flower.linkstate`) changes nothing but time: over random
sequences of pushes, deliveries (one node, or the engine's cycle over every node), replies,
pulls, deletions, expiries and nodes leaving the federation, it returns what flwr 1.42's own
``InMemoryLinkState`` returns, and holds the same messages (after a sweep of the expired ones, which
flwr's scan deletes as it walks past them and the index leaves to the next read); the version
guard falls back, loudly, to flwr's own link state; :func:`hasa_flower.simulation.run` uses it."""
import itertools
import random
from datetime import UTC, datetime

import pytest

pytest.importorskip("flwr", reason="the Flower extra is not installed: pip install -e .[flower]")
from flwr.app import ConfigRecord, Message, RecordDict  # noqa: E402
from flwr.common.constant import HEARTBEAT_INTERVAL_INF, SUPERLINK_NODE_ID  # noqa: E402
from flwr.proto.task_pb2 import Task  # noqa: E402
from flwr.server.superlink.linkstate import in_memory_linkstate as base  # noqa: E402
from flwr.server.superlink.linkstate import utils as linkstate_utils  # noqa: E402
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState, RunRecord  # noqa: E402
from flwr.server.superlink.linkstate.linkstate_factory import LinkStateFactory  # noqa: E402
from flwr.server.utils import validator  # noqa: E402
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID  # noqa: E402
from flwr.supercore.object_store import ObjectStoreFactory  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.superlink.federation import NoOpFederationManager  # noqa: E402

import hasa_flower.linkstate as L  # noqa: E402

RUNS = (1, 2)


class Federation(NoOpFederationManager):
    """Every node is a member except those in ``gone`` (a set shared by both states)."""

    def __init__(self, gone: set[int]):
        super().__init__(simulation=True)
        self.gone = gone

    def filter_nodes(self, node_ids, federation_id):
        return {n for n in node_ids if n not in self.gone}


class World:
    """The same history applied to flwr's link state (``old``) and the indexed one (``new``), on a
    fake clock; node ids are drawn from a counter, so both states have the same nodes."""

    def __init__(self, monkeypatch, num_nodes: int, adopt: bool = False):
        self.clock, self.gone = 1.8e9, set()  # flwr refuses messages created before 2025
        fake_now = lambda: datetime.fromtimestamp(self.clock, tz=UTC)  # noqa: E731
        monkeypatch.setattr(base, "now", fake_now)
        monkeypatch.setattr(linkstate_utils, "now", fake_now)
        monkeypatch.setattr(validator, "now", fake_now)
        for name, value in (("_task_id", 1), ("_run_id", 0), ("_node_id", 0)):  # what messages read
            monkeypatch.setattr(TaskIdentity, name, value)
        new_class = InMemoryLinkState if adopt else L.IndexedLinkState
        self.old, self.new = (cls(Federation(self.gone), ObjectStoreFactory().store())
                              for cls in (InMemoryLinkState, new_class))
        for state in (self.old, self.new):
            ids = itertools.count(101)
            monkeypatch.setattr(base, "generate_rand_int_from_bytes", lambda *a, **k: next(ids))
            nodes = [state.create_node("aid", "name", k.to_bytes(32, "big"), HEARTBEAT_INTERVAL_INF)
                     for k in range(num_nodes)]
            for n in nodes:
                state.acknowledge_node_heartbeat(n, HEARTBEAT_INTERVAL_INF)
            for run_id in RUNS:
                run = Run.create_empty(run_id)
                run.primary_task_id, run.federation_id = 10 + run_id, NOOP_FEDERATION_ID
                state.run_ids[run_id] = RunRecord(run=run)
                state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run_id)
        self.nodes = nodes
        self.pushed: dict[str, int] = {}  # message id -> run
        self.count = 0
        self.seen = dict.fromkeys(["stored", "delivered", "replied", "pulled", "expired"], 0)

    def both(self, call):
        """``call`` on each state; asserts the results are equal and returns one."""
        a, b = call(self.old), call(self.new)
        assert a == b
        return a

    def ins(self, dst: int, run_id: int, ttl: float) -> tuple[Message, Message]:
        """The same instruction, one object per state."""
        self.count += 1
        out = []
        for _ in range(2):
            m = Message(RecordDict({"c": ConfigRecord({"i": self.count})}), dst_node_id=dst, message_type="train",
                        ttl=ttl, group_id="g")
            m.metadata.__dict__.update(_message_id=f"ins-{self.count}", _run_id=run_id,
                                       _src_node_id=SUPERLINK_NODE_ID, _created_at=self.clock)
            out.append(m)
        return out[0], out[1]

    def reply(self, old_ins: Message, new_ins: Message, ttl_shift: float) -> tuple[Message, Message]:
        self.count += 1
        out = []
        for ins in (old_ins, new_ins):
            r = Message(RecordDict({"r": ConfigRecord({"i": self.count})}), reply_to=ins)
            left = ins.metadata.created_at + ins.metadata.ttl - self.clock
            r.metadata.__dict__.update(_message_id=f"res-{self.count}", _created_at=self.clock,
                                       _ttl=max(left + ttl_shift, 1e-3))
            out.append(r)
        return out[0], out[1]


def _delivered(messages):
    return [(m.metadata.message_id, m.metadata.delivered_at) for m in messages]


def _pulled(messages):
    return sorted((m.metadata.reply_to_message_id, m.metadata.message_id, m.has_error() and m.error.code)
                  for m in messages)


def _live(state: InMemoryLinkState, clock: float, gone: set[int]) -> dict:
    """What a reader of ``state`` can still get: instructions neither expired nor addressed to a
    node that left, whether each was delivered, and their replies."""
    live = {mid: (m.metadata.dst_node_id, m.metadata.run_id, m.metadata.delivered_at)
            for mid, m in state.message_ins_store.items()
            if m.metadata.created_at + m.metadata.ttl > clock and m.metadata.dst_node_id not in gone}
    replies = {mid: (rid, state.message_res_store[rid].metadata.delivered_at)
               for mid, rid in state.message_ins_id_to_message_res_id.items() if mid in live}
    return {"ins": live, "res": replies}


def _check_index(state: L.IndexedLinkState) -> None:
    """The index lists exactly the stored instructions not yet delivered, under their node, in the
    order they were stored, with no empty entry."""
    want: dict[int, list[str]] = {}
    for mid, m in state.message_ins_store.items():
        if m.metadata.delivered_at == "":
            want.setdefault(m.metadata.dst_node_id, []).append(mid)
    assert {n: list(ids) for n, ids in state.pending.items()} == want


def _step(w: World, rng: random.Random) -> None:
    op = rng.choices(["push", "deliver", "cycle", "reply", "pull", "delete", "tick", "leave"],
                     weights=[30, 12, 8, 20, 12, 4, 6, 1])[0]
    if op == "push":
        dst = rng.choice([*w.nodes, 999_999]) if rng.random() < 0.97 else rng.choice(w.nodes)
        run_id, ttl = rng.choice(RUNS), rng.choice([3.0, 30.0, 3_000.0])
        if w.pushed and rng.random() < 0.05:  # the same message again (refused once delivered)
            mid = rng.choice(list(w.pushed))
            pair = (w.old.message_ins_store.get(mid), w.new.message_ins_store.get(mid))
            if None not in pair:
                w.both(lambda s: s.store_message_ins(pair[s is w.new]))
            return
        a, b = w.ins(dst, run_id, ttl)
        got = w.both(lambda s: s.store_message_ins(a if s is w.old else b))
        if got is not None:
            w.pushed[got] = run_id
            w.seen["stored"] += 1
    elif op == "deliver":
        node = rng.choice([*w.nodes, 999_999])
        limit, run_id = rng.choice([None, 1, 2]), rng.choice([None, *RUNS, 7])
        w.seen["delivered"] += len(w.both(lambda s: _delivered(s.get_message_ins(node, limit, run_id=run_id))))
    elif op == "cycle":  # vce_api.add_messages_to_queue: every node, limit 1
        for node in w.nodes:
            w.seen["delivered"] += len(w.both(lambda s: _delivered(s.get_message_ins(node_id=node, limit=1))))
    elif op == "reply":
        delivered = [mid for mid, m in w.old.message_ins_store.items()
                     if m.metadata.delivered_at and mid not in w.old.message_ins_id_to_message_res_id]
        candidates = delivered or list(w.pushed)
        if not candidates:
            return
        mid = rng.choice(candidates)
        old_ins, new_ins = w.old.message_ins_store.get(mid), w.new.message_ins_store.get(mid)
        if old_ins is None:  # deleted (or expired and swept) in flwr's state: reply to a copy
            if new_ins is None:
                return
            old_ins = new_ins
        a, b = w.reply(old_ins, new_ins or old_ins, rng.choice([0.0, 0.0, 0.0, 5.0]))
        w.seen["replied"] += w.both(lambda s: s.store_message_res(a if s is w.old else b)) is not None
    elif op == "pull":  # InMemoryGrid.pull_messages: a run's ids, then delete what was answered
        run_id = rng.choice(RUNS)
        ids = [mid for mid, r in w.pushed.items() if r == run_id]
        if not ids:
            return
        asked = rng.sample(ids, rng.randint(1, min(len(ids), 6)))
        got = w.both(lambda s: _pulled(s.get_message_res(set(asked), run_id)))
        w.seen["pulled"] += sum(not error for _, _, error in got)
        w.both(lambda s: s.delete_messages({reply_to for reply_to, _, _ in got}))
    elif op == "delete" and w.pushed:
        ids = set(rng.sample(list(w.pushed), rng.randint(1, min(len(w.pushed), 4))))
        w.both(lambda s: s.delete_messages(ids))
    elif op == "tick":
        before = len(_live(w.old, w.clock, w.gone)["ins"])
        w.clock += rng.choice([0.5, 2.0, 10.0, 100.0])
        w.seen["expired"] += before - len(_live(w.old, w.clock, w.gone)["ins"])
    elif op == "leave" and len(w.gone) < len(w.nodes) // 3:
        w.gone.add(rng.choice(w.nodes))


@pytest.mark.parametrize("seed", range(12))
def test_indexed_link_state_gives_what_flwr_gives_over_random_histories(monkeypatch, seed):
    rng = random.Random(seed)
    w = World(monkeypatch, num_nodes=rng.choice([1, 3, 8, 20]), adopt=seed % 3 == 2)
    adopt_at = rng.randint(0, 200) if seed % 3 == 2 else None
    for step in range(400):
        if step == adopt_at:  # flwr run: a state already in use is indexed in place
            assert L.index_state(w.new) and type(w.new) is L.IndexedLinkState
        _step(w, rng)
        assert set(w.old.message_ins_store) <= set(w.new.message_ins_store)  # the index only defers deletions
        assert _live(w.old, w.clock, w.gone) == _live(w.new, w.clock, w.gone)
        if isinstance(w.new, L.IndexedLinkState):
            _check_index(w.new)
    assert min(w.seen.values()) > 0, w.seen  # the history did exercise every path
    for state in (w.old, w.new):  # sweep what expired or left: then both hold the very same messages
        state._check_stored_messages(set(state.message_ins_store))
    assert list(w.old.message_ins_store) == list(w.new.message_ins_store)
    assert _delivered(w.old.message_ins_store.values()) == _delivered(w.new.message_ins_store.values())
    assert w.old.message_ins_id_to_message_res_id == w.new.message_ins_id_to_message_res_id
    assert list(w.old.message_res_store) == list(w.new.message_res_store)


def test_get_message_ins_reads_only_the_nodes_own_messages(monkeypatch):
    """1,000 nodes with a message each: delivering one node's message checks that message alone
    (flwr's scan checks every message stored before it)."""
    w = World(monkeypatch, num_nodes=1_000)
    for n in w.nodes:
        a, b = w.ins(n, 1, 3_000.0)
        w.old.store_message_ins(a), w.new.store_message_ins(b)
    checked = {"old": 0, "new": 0}
    for name, state in (("old", w.old), ("new", w.new)):
        check = state._check_stored_messages

        def counted(ids, run_id=None, name=name, check=check):
            checked[name] += len(ids)
            return check(ids, run_id)
        monkeypatch.setattr(state, "_check_stored_messages", counted)
    w.both(lambda s: _delivered(s.get_message_ins(w.nodes[-1], 1)))
    assert checked == {"old": 1_000, "new": 1}


def test_the_version_guard_falls_back_loudly_to_flwrs_own_link_state():
    factory = lambda: LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())  # noqa: E731
    assert L.supported(L.FLWR_VERSION)
    with pytest.warns(RuntimeWarning, match=r"written for flwr 1\.42\.0, and flwr 1\.43\.0 is installed"):
        assert not L.supported("1.43.0")
    with pytest.warns(RuntimeWarning, match="flwr 9.9 is installed"), L.indexed(version="9.9") as on:
        assert not on and type(factory().state()) is InMemoryLinkState
    with L.indexed() as on:
        assert on and type(factory().state()) is L.IndexedLinkState
    with L.indexed(enabled=False) as on:
        assert not on and type(factory().state()) is InMemoryLinkState
    assert type(factory().state()) is InMemoryLinkState  # restored after the block
    state = factory().state()
    with pytest.warns(RuntimeWarning, match="flwr 2.0.0 is installed"):
        assert not L.index_state(state, version="2.0.0")
    assert type(state) is InMemoryLinkState
    assert L.index_state(state) and type(state) is L.IndexedLinkState and state.pending == {}
    assert not L.index_state(object())


def test_a_ray_run_creates_an_indexed_link_state(monkeypatch):
    """:func:`hasa_flower.simulation.run` (backend ray) runs flwr's simulation with the index on
    (here a stand-in for ``run_simulation`` that only creates the link state as flwr's does)."""
    import flwr.simulation

    import hasa_core as H
    import hasa_flower.simulation as S
    made = []

    def run_simulation(**kwargs):
        made.append(type(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(),
                                          ObjectStoreFactory()).state()))
    monkeypatch.setattr(flwr.simulation, "run_simulation", run_simulation)
    cfg = H.config("smoke", rounds=1)
    for indexed, want in ((True, L.IndexedLinkState), (False, InMemoryLinkState)):
        with pytest.raises(RuntimeError, match="ended without a record"):
            S.run(cfg, 0, backend="ray", indexed=indexed)
        assert made.pop() is want
