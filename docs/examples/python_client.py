#!/usr/bin/env python3
"""Talk to AI Flow from Python with the `aiflow` package (python/, docs/python.md).

Publishes an event, registers a model version, logs a metric about it and reads the version
back by alias, the way an ML job written in Python would. Inside a job, AIFLOW_URL,
AIFLOW_TOKEN and AIFLOW_EXECUTION are set by the scheduler and `Client()` takes them; outside
one, AIFLOW_URL defaults to http://127.0.0.1:8080.

    pip install ./python            # or run it from a checkout as it is
    python3 docs/examples/python_client.py
"""

import sys
from pathlib import Path

try:
    import aiflow
except ImportError:  # not installed: use the package of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "src"))
    import aiflow


def main() -> int:
    client = aiflow.Client()

    # Inside a job the event names the job's execution (context.execution) by itself.
    sent = client.send_event("dataset/python_demo", "1", event_type="DATA_LANDED", sender="python-example")
    print(f"published event {sent['offset']}: {sent['key']} {sent['event_type']}")

    # The model is registered on first use; the server publishes MODEL_VERSION_CREATED.
    version = client.register_model_version("python_model", "file:///tmp/python_model.pkl")
    print(f"registered python_model version {version['version']}")

    client.log_metric("python_accuracy", "accuracy", 0.93, step=1,
                      kind="model", subject="python_model", model_version=version["version"])
    print("logged python_accuracy accuracy=0.93")

    client.set_model_alias("python_model", "candidate", version["version"])
    found = client.get_model_version_by_alias("python_model", "candidate")
    print(f"python_model@candidate is version {found['version']} at {found['uri']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except aiflow.ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
