"""The HASA ClientApp: a node's reply to the server's query, train and evaluate messages.

A node trains with :func:`hasa_core.train_subnet` and scores with :func:`hasa_core.client_accuracy`;
it never sees more of the model than the subnet it was sent. Flower loads ``app`` (pyproject's
``[tool.flwr.app.components]``).

Imports: flwr, :mod:`hasa_core`, :mod:`hasa_flower.wire`, :mod:`hasa_flower.dataset`.
"""
from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import hasa_core as H
from hasa_flower.dataset import my_client
from hasa_flower.wire import from_record, int_array, to_record

app = ClientApp()


def _reply(msg: Message, k: int, arrays: dict[str, ArrayRecord] | None = None, **metrics: float) -> Message:
    content = RecordDict({"reply": ConfigRecord({"partition-id": k}), **(arrays or {})})
    if metrics:
        content["metrics"] = MetricRecord(metrics)
    return Message(content=content, reply_to=msg)


@app.query()
def client_query(msg: Message, context: Context) -> Message:
    """Reply with this client's one-time upload: n_k and its two histograms."""
    cfg, seed, task, k, c = my_client(msg, context)
    reply = _reply(msg, k, {"counts": ArrayRecord({"label_counts": int_array(c.label_counts),
                                                   "feature_counts": int_array(c.feature_counts)})})
    reply.content["reply"]["name"] = c.name
    reply.content["reply"]["n-train"] = c.n_train
    reply.content["reply"]["special"] = list(task.special)
    return reply


@app.train()
def client_train(msg: Message, context: Context) -> Message:
    """Train the received subnet (:func:`hasa_core.train_subnet`) and send it back with n_k."""
    cfg, seed, task, k, client = my_client(msg, context)
    conf = msg.content["config"]
    if int(conf["partition-id"]) != k:
        raise ValueError(f"a message for partition {conf['partition-id']} reached partition {k}")
    local = H.train_subnet(from_record(msg.content["subnet"]), task.arch, client, cfg,
                           float(conf["width"]), int(conf["round"]), k, seed)
    return _reply(msg, k, {"subnet": to_record(local)}, **{"num-examples": float(client.n_train)})


@app.evaluate()
def client_evaluate(msg: Message, context: Context) -> Message:
    """Test accuracy of the global model's static slice at each requested width (or of the
    slice it was sent, when the message says ``sliced``)."""
    cfg, seed, task, k, client = my_client(msg, context)
    params, conf = from_record(msg.content["model"]), msg.content["config"]
    if conf.get("sliced", False):  # already the width-w_k slice: score it as it is
        acc = [H.accuracy(params, task.arch, client.test, task.ignore_class)]
    else:
        acc = [H.client_accuracy(params, task.arch, client, float(w), task.ignore_class) for w in conf["widths"]]
    return _reply(msg, k, **{f"accuracy-{i}": a for i, a in enumerate(acc)})
