//! `aiflow status`: server health, the backends in use, what is running, and from two scrapes
//! of `/metrics` the scheduler's lag, event and job rates, and the slowest queues.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aiflow_api::meta::{ExecutionQuery, ListQuery};
use clap::Args;

use super::{CliError, CliResult, Ctx, runtime};

#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    /// Seconds between the two scrapes of /metrics that rates are measured over.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

impl Default for StatusArgs {
    fn default() -> Self {
        Self { interval: 1.0 }
    }
}

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (the subset `/metrics` writes: no timestamps, label
/// values without escaped quotes).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.trim().to_string(), v.trim_matches('"').to_string()))
                    })
                    .collect();
                (n, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum of a metric's samples whose labels include `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

/// The `q` quantile of a histogram's samples (per label set `with`), from its buckets: the
/// upper bound of the first bucket holding it.
fn quantile(samples: &[Sample], name: &str, with: &[(&str, &str)], q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == bucket) {
        if !with
            .iter()
            .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        {
            continue;
        }
        let le = match s.labels.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().ok()?,
            None => continue,
        };
        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += s.value;
    }
    let mut sorted: Vec<(f64, f64)> = buckets.into_values().collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total <= 0.0 {
        return None;
    }
    sorted
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

/// Queues by their mean wait since the server started, slowest first.
fn queues(samples: &[Sample]) -> Vec<serde_json::Value> {
    let mut names: Vec<String> = samples
        .iter()
        .filter(|s| s.name.starts_with("aiflow_queue_") || s.name == "aiflow_jobs_running")
        .filter_map(|s| s.labels.get("queue").cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut out: Vec<(f64, serde_json::Value)> = names
        .into_iter()
        .map(|q| {
            let with = [("queue", q.as_str())];
            let count = sum(samples, "aiflow_queue_wait_seconds_count", &with);
            let mean =
                (count > 0.0).then(|| sum(samples, "aiflow_queue_wait_seconds_sum", &with) / count);
            let p95 = quantile(samples, "aiflow_queue_wait_seconds", &with, 0.95);
            let start_p95 = quantile(samples, "aiflow_job_start_latency_seconds", &with, 0.95);
            (
                mean.unwrap_or(0.0),
                serde_json::json!({
                    "queue": q,
                    "depth": sum(samples, "aiflow_queue_depth", &with),
                    "running": sum(samples, "aiflow_jobs_running", &with),
                    "wait_mean_s": mean,
                    "wait_p95_s": p95,
                    "start_latency_p95_s": start_p95,
                }),
            )
        })
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.into_iter().map(|(_, v)| v).collect()
}

fn seconds(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(s) if s.is_infinite() => "> 60 s".into(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
        None => "-".into(),
    }
}

/// A GET of a route outside `/api/v1`, with the `--token` when there is one.
async fn get(client: &aiflow_sdk::Client, url: &str) -> Result<reqwest::Response, String> {
    client
        .get_url(url)
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| e.to_string())
}

async fn scrape(client: &aiflow_sdk::Client, url: &str) -> Result<Vec<Sample>, CliError> {
    let text = get(client, url)
        .await
        .and_then(|r| r.error_for_status().map_err(|e| e.to_string()))
        .map_err(|e| CliError::Failed(format!("cannot read {url}: {e}"), Vec::new()))?
        .text()
        .await
        .map_err(|e| CliError::Failed(format!("cannot read {url}: {e}"), Vec::new()))?;
    Ok(parse(&text))
}

pub(crate) fn run(args: &StatusArgs, ctx: &Ctx) -> CliResult {
    if !(args.interval.is_finite() && (0.0..=60.0).contains(&args.interval)) {
        return Err(CliError::Usage(
            "--interval must be between 0 and 60 seconds".into(),
        ));
    }
    let client = ctx.client();
    runtime().block_on(async {
        let url = format!("{}/readyz", client.base_url());
        let ready: serde_json::Value = get(&client, &url)
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach {url}: {e}"), Vec::new()))?
            .json()
            .await
            .map_err(|e| CliError::Failed(format!("unexpected answer from {url}: {e}"), Vec::new()))?;
        let workers_url = format!("{}/api/v1/workers", client.base_url());
        let workers: serde_json::Value = match get(&client, &workers_url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let metrics_url = format!("{}/metrics", client.base_url());
        let first = scrape(&client, &metrics_url).await?;
        let t0 = Instant::now();
        let running = client
            .list_executions(&ExecutionQuery {
                state: Some("RUNNING".into()),
                limit: Some(1000),
                ..ExecutionQuery::default()
            })
            .await?;
        let workflows = client
            .list_workflows(&ListQuery {
                limit: Some(1000),
                ..ListQuery::default()
            })
            .await?;
        tokio::time::sleep(Duration::from_secs_f64(args.interval).saturating_sub(t0.elapsed()))
            .await;
        let second = scrape(&client, &metrics_url).await?;
        let over = t0.elapsed().as_secs_f64().max(1e-3);
        let rate = |name: &str, with: &[(&str, &str)]| {
            let d = sum(&second, name, with) - sum(&first, name, with);
            (d.max(0.0) / over * 10.0).round() / 10.0
        };
        let out = serde_json::json!({
            "server": client.base_url(),
            "status": ready["status"],
            "database": ready["database"],
            "events": ready["events"],
            "workflows": workflows.items.len(),
            "running_executions": running.items.len(),
            "workers": workers["items"],
            "scheduler": {
                "role": ready["scheduler"]["role"],
                "leader": ready["scheduler"]["leader"],
                "status": ready["scheduler"]["status"],
                "latest_offset": sum(&second, "aiflow_events_latest_offset", &[]),
                "committed_offset": sum(&second, "aiflow_scheduler_committed_offset", &[]),
                "lag_events": sum(&second, "aiflow_scheduler_lag_events", &[]),
                "handling_p99_s": quantile(&second, "aiflow_scheduler_event_handling_seconds", &[], 0.99),
            },
            "rates_per_s": {
                "over_s": (over * 100.0).round() / 100.0,
                "events_published": rate("aiflow_events_published_total", &[]),
                "events_delivered": rate("aiflow_events_delivered_total", &[]),
                "jobs_started": rate("aiflow_job_executions_total", &[("state", "RUNNING")]),
                "jobs_failed": rate("aiflow_job_executions_total", &[("state", "FAILED")]),
                "http_requests": rate("aiflow_http_requests_total", &[]),
            },
            "queues": queues(&second),
        });
        ctx.print(&out, |o| {
            let s = &o["scheduler"];
            let r = &o["rates_per_s"];
            let mut text = format!(
                "server      {}\nstatus      {}\ndatabase    {} ({})\nevents      {} ({})\nworkflows   {}\nrunning     {} executions\nscheduler   lag {} events (latest offset {}, committed {}), handling p99 {}\nrates       {}/s events published, {}/s delivered, {}/s jobs started, {}/s failed, {}/s requests (over {} s)\n",
                o["server"].as_str().unwrap_or("?"),
                o["status"].as_str().unwrap_or("?"),
                o["database"]["backend"].as_str().unwrap_or("?"),
                o["database"]["status"].as_str().unwrap_or("?"),
                o["events"]["backend"].as_str().unwrap_or("?"),
                o["events"]["status"].as_str().unwrap_or("?"),
                o["workflows"],
                o["running_executions"],
                s["lag_events"],
                s["latest_offset"],
                s["committed_offset"],
                seconds(&s["handling_p99_s"]),
                r["events_published"],
                r["events_delivered"],
                r["jobs_started"],
                r["jobs_failed"],
                r["http_requests"],
                r["over_s"],
            );
            let role = s["role"].as_str().unwrap_or("?");
            let leader = &s["leader"];
            if role == "single" || leader.is_null() {
                text.push_str(&format!("role        {role}\n"));
            } else {
                text.push_str(&format!(
                    "role        {role}; leader {} at {} (epoch {}, since {})\n",
                    leader["node"].as_str().unwrap_or("?"),
                    leader["url"].as_str().unwrap_or("?"),
                    leader["epoch"],
                    leader["since"].as_str().unwrap_or("?"),
                ));
            }
            if let Some(ws) = o["workers"].as_array() {
                let alive = ws.iter().filter(|w| w["alive"] == true).count();
                text.push_str(&format!("workers     {alive} alive of {} registered\n", ws.len()));
                for w in ws {
                    let queues: Vec<&str> = w["queues"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(serde_json::Value::as_str)
                        .collect();
                    text.push_str(&format!(
                        "            {:<16} {:<6} queues {:<20} busy {}/{}  last heartbeat {}\n",
                        w["name"].as_str().unwrap_or("?"),
                        if w["alive"] == true { "alive" } else { "gone" },
                        queues.join(","),
                        w["busy"],
                        w["slots"],
                        w["last_heartbeat"].as_str().unwrap_or("?"),
                    ));
                }
            }
            text.push_str("queues      QUEUE            DEPTH  RUNNING  WAIT MEAN   WAIT P95    START P95   (slowest first)\n");
            for q in o["queues"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "            {:<16} {:<6} {:<8} {:<11} {:<11} {}\n",
                    q["queue"].as_str().unwrap_or("?"),
                    q["depth"],
                    q["running"],
                    seconds(&q["wait_mean_s"]),
                    seconds(&q["wait_p95_s"]),
                    seconds(&q["start_latency_p95_s"]),
                ));
            }
            text
        });
        if ready["status"] != "ready" {
            return Err(CliError::Failed(
                "the server is not ready (see above)".into(),
                Vec::new(),
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE aiflow_queue_wait_seconds histogram
aiflow_queue_wait_seconds_bucket{queue=\"default\",le=\"0.01\"} 1
aiflow_queue_wait_seconds_bucket{queue=\"default\",le=\"0.1\"} 3
aiflow_queue_wait_seconds_bucket{queue=\"default\",le=\"+Inf\"} 4
aiflow_queue_wait_seconds_sum{queue=\"default\"} 2.5
aiflow_queue_wait_seconds_count{queue=\"default\"} 4
aiflow_queue_wait_seconds_bucket{queue=\"gpu\",le=\"0.01\"} 1
aiflow_queue_wait_seconds_bucket{queue=\"gpu\",le=\"+Inf\"} 1
aiflow_queue_wait_seconds_sum{queue=\"gpu\"} 0.005
aiflow_queue_wait_seconds_count{queue=\"gpu\"} 1
aiflow_queue_depth{queue=\"default\"} 2
aiflow_scheduler_lag_events 7
";

    #[test]
    fn samples_quantiles_and_queues() {
        let s = parse(TEXT);
        assert_eq!(sum(&s, "aiflow_scheduler_lag_events", &[]), 7.0);
        assert_eq!(
            quantile(
                &s,
                "aiflow_queue_wait_seconds",
                &[("queue", "default")],
                0.5
            ),
            Some(0.1)
        );
        assert_eq!(
            quantile(
                &s,
                "aiflow_queue_wait_seconds",
                &[("queue", "default")],
                0.99
            ),
            Some(f64::INFINITY)
        );
        let q = queues(&s);
        assert_eq!(q[0]["queue"], "default", "slowest first: {q:?}");
        assert_eq!(q[0]["depth"], 2.0);
        assert_eq!(q[0]["wait_mean_s"], 0.625);
        assert_eq!(q[1]["queue"], "gpu");
    }
}
