//! Meta service benchmark: bulk metric points, history and downsampled reads, model version
//! list and alias lookup with many versions.
//!
//! `cargo run --release -p aiflow-meta --bin bench_meta -- [--database URL] [--points N]
//! [--keys K] [--versions V]` (default: a temporary SQLite file, 1,000,000 points over 100 keys,
//! 10,000 versions).

use std::time::{Duration, Instant};

use aiflow_api::PageQuery;
use aiflow_api::meta::{
    MetricKind, MetricPoint, NewMetric, NewModel, NewModelVersion, PointsQuery,
};
use aiflow_db::{Db, DbConfig};
use aiflow_meta::Store;

struct Args {
    database: Option<String>,
    points: usize,
    keys: usize,
    versions: i64,
}

fn args() -> Args {
    let mut a = Args {
        database: None,
        points: 1_000_000,
        keys: 100,
        versions: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_default();
        match flag.as_str() {
            "--database" => a.database = Some(val),
            "--points" => a.points = val.parse().expect("--points N"),
            "--keys" => a.keys = val.parse().expect("--keys K"),
            "--versions" => a.versions = val.parse().expect("--versions V"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("aiflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = a
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite:{}", dir.join("bench.db").display()));
    let db = Db::connect(&DbConfig::new(&url)).await.expect("database");
    println!("backend: {}", db.backend.name());
    let store = Store::new(db);

    // ---- metric points
    store
        .create_model(&NewModel {
            name: "bench".into(),
            ..NewModel::default()
        })
        .await
        .expect("model");
    store
        .create_metric(&NewMetric {
            name: "bench_train".into(),
            kind: MetricKind::Job,
            subject: None,
            project: None,
            description: None,
            properties: None,
            tags: Default::default(),
        })
        .await
        .expect("metric");
    let per_key = a.points / a.keys;
    let batch = 10_000;
    let all: Vec<MetricPoint> = (0..a.points)
        .map(|i| MetricPoint {
            key: format!("k{}", i % a.keys),
            value: (i as f64).sin(),
            step: (i / a.keys) as i64,
            timestamp: None,
            model_version: None,
            job_execution: None,
        })
        .collect();
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        store
            .log_points("bench_train", chunk)
            .await
            .expect("points");
    }
    let took = t.elapsed();
    println!(
        "bulk insert: {} points in {:.2} s = {:.0} points/s (batches of {batch})",
        a.points,
        took.as_secs_f64(),
        a.points as f64 / took.as_secs_f64()
    );
    let mut reads = Vec::new();
    let mut n = 0;
    for i in 0..20 {
        let q = PointsQuery {
            key: Some(format!("k{}", i % a.keys)),
            limit: Some(per_key.min(100_000) as u32),
            ..PointsQuery::default()
        };
        let t = Instant::now();
        let s = store.read_points("bench_train", &q).await.expect("read");
        reads.push(t.elapsed());
        n = s.points.len();
    }
    println!(
        "history read of one key ({n} points): median {}",
        ms(median(reads))
    );
    let mut reads = Vec::new();
    let mut n = 0;
    for i in 0..20 {
        let q = PointsQuery {
            key: Some(format!("k{}", i % a.keys)),
            max_points: Some(500),
            ..PointsQuery::default()
        };
        let t = Instant::now();
        let s = store.read_points("bench_train", &q).await.expect("read");
        reads.push(t.elapsed());
        n = s.points.len();
    }
    println!(
        "downsampled curve ({per_key} points -> {n} buckets): median {}",
        ms(median(reads))
    );

    // ---- model versions
    let t = Instant::now();
    for _ in 0..a.versions {
        store
            .create_model_version("bench", &NewModelVersion::default())
            .await
            .expect("version");
    }
    let took = t.elapsed();
    println!(
        "model versions: {} registered (each with its event) in {:.2} s = {:.0}/s",
        a.versions,
        took.as_secs_f64(),
        a.versions as f64 / took.as_secs_f64()
    );
    store
        .set_alias("bench", "production", a.versions / 2)
        .await
        .expect("alias");
    let mut lookups = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let al = store
            .get_alias("bench", "production", None)
            .await
            .expect("alias");
        lookups.push(t.elapsed());
        assert_eq!(al.version, a.versions / 2);
    }
    println!(
        "alias lookup ({} versions): median {}",
        a.versions,
        ms(median(lookups))
    );
    let at = chrono::Utc::now();
    let mut lookups = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        store
            .get_alias("bench", "production", Some(at))
            .await
            .expect("alias at");
        lookups.push(t.elapsed());
    }
    println!("alias lookup at a time: median {}", ms(median(lookups)));
    let mut lists = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    let t_all = Instant::now();
    loop {
        let t = Instant::now();
        let page = store
            .list_model_versions(
                "bench",
                None,
                &PageQuery {
                    limit: Some(100),
                    cursor: cursor.clone(),
                },
            )
            .await
            .expect("list");
        lists.push(t.elapsed());
        pages += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    println!(
        "model version list: {pages} pages of 100 in {}, median page {}",
        ms(t_all.elapsed()),
        ms(median(lists))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
