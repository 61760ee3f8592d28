"""`log_batch` of 10,000 metric points (10 keys x 1,000 steps) through the MLflow client, five
times, each into a new run; prints the median, best and worst. Usage:

    python tests/mlflow/bench_log_batch.py http://127.0.0.1:8080

Not a pytest test (docs/mlflow.md, "Performance").
"""
import sys, time, mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
url = sys.argv[1]
mlflow.set_tracking_uri(url)
c = MlflowClient(url)
exp = mlflow.set_experiment(f"bench-{time.time_ns()}").experiment_id
run = c.create_run(exp)
ts = int(time.time() * 1000)
pts = [Metric(f"m{i % 10}", i * 0.5, ts + i, i // 10) for i in range(10_000)]
times = []
for rep in range(5):
    r = c.create_run(exp)
    t = time.perf_counter()
    c.log_batch(r.info.run_id, metrics=pts)
    times.append(time.perf_counter() - t)
hist = c.get_metric_history(r.info.run_id, "m3")
assert len(hist) == 1000, len(hist)
times.sort()
print(f"log_batch 10000 points: median {times[2]*1000:.0f} ms, best {times[0]*1000:.0f} ms, worst {times[-1]*1000:.0f} ms")
