#!/usr/bin/env python3
"""Talk to AI Flow from Python with the standard library only.

Publishes an event and registers a model version (with a metric) over the HTTP API, the way an
ML job written in Python would. Inside a job, AIFLOW_URL, AIFLOW_TOKEN and AIFLOW_EXECUTION are
set by the scheduler; outside one, AIFLOW_URL defaults to http://127.0.0.1:8080.

    python3 docs/examples/python_client.py
"""

import json
import os
import sys
import urllib.error
import urllib.request

BASE = os.environ.get("AIFLOW_URL", "http://127.0.0.1:8080").rstrip("/") + "/api/v1"
TOKEN = os.environ.get("AIFLOW_TOKEN", "")


def call(method, path, body=None):
    """One API call; returns the decoded JSON answer, raises with the server's error message."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        err = json.loads(e.read().decode() or "{}").get("error", {})
        raise RuntimeError(f"{method} {path}: {e.code} {err.get('code')}: {err.get('message')} (field {err.get('field')})")


def main():
    # Events a job publishes carry its execution, so that execution's rules see them first.
    context = {"execution": os.environ["AIFLOW_EXECUTION"]} if "AIFLOW_EXECUTION" in os.environ else None
    event = {"key": "dataset/python_demo", "value": "1", "event_type": "DATA_LANDED", "sender": "python-example"}
    if context:
        event["context"] = context
    sent = call("POST", "/events", event)
    print(f"published event {sent['offset']}: {sent['key']} {sent['event_type']}")

    try:
        call("POST", "/models", {"name": "python_model", "description": "registered from Python"})
    except RuntimeError as e:
        if " 409 " not in str(e):  # already there is fine
            raise
    version = call("POST", "/models/python_model/versions", {"uri": "file:///tmp/python_model.pkl", "status": "READY"})
    print(f"registered python_model version {version['version']}")

    try:
        call("POST", "/metrics", {"name": "python_accuracy", "kind": "model", "subject": "python_model"})
    except RuntimeError as e:
        if " 409 " not in str(e):
            raise
    call("POST", "/metrics/python_accuracy/points",
         [{"key": "accuracy", "value": 0.93, "step": 1, "model_version": version["id"]}])
    print("logged python_accuracy accuracy=0.93")
    return 0


if __name__ == "__main__":
    sys.exit(main())
