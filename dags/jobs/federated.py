"""Federated averaging (FedAvg) on AI Flow: the jobs of dags/federated_averaging.json.

    python3 dags/jobs/federated.py init        # the global model of round 1 (the aggregator's queue)
    python3 dags/jobs/federated.py learn       # one site's local training (FL_SITE, the site's queue)
    python3 dags/jobs/federated.py aggregate   # average the round's updates (the aggregator's queue)

The model is a line, y = w*x + b. Each site owns data nobody else sees (generated on first use
from the site's name and kept in the worker's data folder) and trains on it for a few steps of
gradient descent, starting from the global model of the round. Everything travels as events
through the AI Flow API ($AIFLOW_URL), with the execution's id in `context` so only this
execution's rules see them:

    fl/model          MODEL_VERSION_CREATED  {"round": r, "weights": [w, b], ...}  starts the learners
    fl/update/<site>  FL_UPDATE              {"round": r, "site", "weights", "n", "loss", "model_offset"}
    fl/done           FL_DONE                {"round": r, "weights", "loss", "reason"}  ends the run

Python 3 standard library only.
"""

import json
import os
import random
import sys
import urllib.parse
import urllib.request

EXECUTION = os.environ.get("AIFLOW_EXECUTION", "")
NAMESPACE = os.environ.get("AIFLOW_NAMESPACE", "default")
JOB = os.environ.get("AIFLOW_JOB", "federated")


def log(message):
    print(f"[{JOB}] {message}", flush=True)


def api(method, path, body=None):
    """One call of the AI Flow HTTP API; the decoded JSON answer."""
    url = os.environ.get("AIFLOW_URL", "http://127.0.0.1:8080").rstrip("/") + "/api/v1" + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    token = os.environ.get("AIFLOW_TOKEN", "")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def publish(key, event_type, value, round_, idempotency):
    """Publishes an event of this execution; the same idempotency key is stored only once
    (a retried job does not count twice)."""
    context = {"execution": EXECUTION, "round": round_}
    stored = api(
        "POST",
        "/events",
        {
            "namespace": NAMESPACE,
            "key": key,
            "value": json.dumps(value, separators=(",", ":")),
            "event_type": event_type,
            "sender": JOB,
            "context": context,
            "idempotency_key": f"fl-{EXECUTION}-{idempotency}",
        },
    )
    log(f"published {key} (offset {stored['offset']}): {stored['value']}")
    return stored


def events(key, after=0):
    """This execution's events whose key matches `key`, oldest first."""
    out = []
    while True:
        query = urllib.parse.urlencode(
            {"namespace": NAMESPACE, "key": key, "after": after, "limit": 1000}
        )
        page = api("GET", f"/events?{query}")
        for e in page["items"]:
            if (e.get("context") or {}).get("execution") == EXECUTION:
                out.append(e)
        if not page["items"] or not page.get("next_cursor"):
            return out
        after = page["items"][-1]["offset"]


def setting(name, default):
    return type(default)(os.environ.get(name, default))


# --- the controller side -----------------------------------------------------------------


def init():
    """Publishes the global model of round 1: all weights zero."""
    publish("fl/model", "MODEL_VERSION_CREATED", {"round": 1, "weights": [0.0, 0.0]}, 1, "model-1")


def aggregate():
    """Averages the updates of the current round, weighted by each site's number of samples,
    and publishes the next round's model, or `fl/done` once the target loss or the last round
    is reached."""
    sites = [s for s in os.environ.get("FL_SITES", "").split(",") if s]
    rounds = setting("FL_ROUNDS", 10)
    target = setting("FL_TARGET_LOSS", 0.01)
    models = events("fl/model")
    if not models:
        sys.exit("no fl/model event in this execution: nothing to aggregate")
    model = models[-1]
    round_ = json.loads(model["value"])["round"]
    # The round's updates come after the model that started it; a site's last one counts.
    updates = {}
    for e in events("fl/update/*", after=model["offset"]):
        u = json.loads(e["value"])
        if u["round"] == round_:
            updates[u["site"]] = (e["offset"], u)
    missing = [s for s in sites if s not in updates]
    if missing:
        sys.exit(f"round {round_}: no update from {', '.join(missing)}")
    total = sum(u["n"] for _, u in updates.values())
    size = len(next(iter(updates.values()))[1]["weights"])
    weights = [
        sum(u["n"] * u["weights"][i] for _, u in updates.values()) / total for i in range(size)
    ]
    loss = sum(u["n"] * u["loss"] for _, u in updates.values()) / total
    used = sorted(offset for offset, _ in updates.values())
    log(
        f"round {round_}: averaged {len(updates)} updates ({total} samples): "
        f"w={weights[0]:.4f} b={weights[1]:.4f} loss={loss:.5f}"
    )
    summary = {"weights": weights, "loss": loss, "sites": sorted(updates), "updates": used}
    if loss <= target or round_ >= rounds:
        reason = "target" if loss <= target else "rounds"
        publish("fl/done", "FL_DONE", {"round": round_, **summary, "reason": reason}, round_, "done")
    else:
        nxt = round_ + 1
        publish(
            "fl/model",
            "MODEL_VERSION_CREATED",
            {"round": nxt, **summary},
            nxt,
            f"model-{nxt}",
        )


# --- the site side -----------------------------------------------------------------------


def local_data(site):
    """The site's own samples (x, y): generated once from the site's name, then read back.
    Sites see different ranges of x (non-IID data); the truth is y = 2x - 1 plus noise."""
    folder = os.path.join(os.environ.get("AIFLOW_DATA_DIR", ".aiflow"), "fl")
    path = os.path.join(folder, f"{site}.csv")
    if not os.path.exists(path):
        rng = random.Random(site)
        index = sum(map(ord, site)) % 3
        n = 30 + 20 * index
        rows = []
        for _ in range(n):
            x = index + rng.random()
            rows.append((x, 2.0 * x - 1.0 + rng.gauss(0.0, 0.1)))
        os.makedirs(folder, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.writelines(f"{x!r},{y!r}\n" for x, y in rows)
        os.replace(path + ".tmp", path)
    with open(path) as f:
        return [tuple(map(float, line.split(","))) for line in f if line.strip()]


def mse(data, w, b):
    return sum((w * x + b - y) ** 2 for x, y in data) / len(data)


def learn():
    """Trains on the site's data from the global model the event that started this job
    carries ($AIFLOW_EVENT), and publishes the update."""
    site = os.environ["FL_SITE"]
    steps = setting("FL_LOCAL_STEPS", 10)
    rate = setting("FL_LEARNING_RATE", 0.1)
    started_by = json.loads(os.environ.get("AIFLOW_EVENT") or "null")
    if not started_by or started_by.get("key") != "fl/model":
        sys.exit("a learner starts on an fl/model event (AIFLOW_EVENT)")
    model = json.loads(started_by["value"])
    round_ = model["round"]
    w, b = model["weights"]
    data = local_data(site)
    before = mse(data, w, b)
    n = len(data)
    for _ in range(steps):
        gw = sum((w * x + b - y) * x for x, y in data) / n
        gb = sum((w * x + b - y) for x, y in data) / n
        w, b = w - rate * gw, b - rate * gb
    loss = mse(data, w, b)
    worker = os.environ.get("AIFLOW_WORKER", "the server")
    log(f"round {round_} at {site} on {worker}: {n} samples, loss {before:.5f} -> {loss:.5f}")
    publish(
        f"fl/update/{site}",
        "FL_UPDATE",
        {
            "round": round_,
            "site": site,
            "weights": [w, b],
            "n": n,
            "loss": loss,
            "model_offset": started_by["offset"],
        },
        round_,
        f"update-{round_}-{site}",
    )


if __name__ == "__main__":
    commands = {"init": init, "learn": learn, "aggregate": aggregate}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: federated.py {'|'.join(commands)}")
    commands[sys.argv[1]]()
