//! Metric points: append-only, bulk inserted, read by key and step range, downsampled on
//! request.

use std::collections::{BTreeMap, BTreeSet};

use aiflow_api::meta::{
    MetricKind, MetricPoint, PointOut, PointSeries, PointsQuery, PointsWritten,
};
use aiflow_db::Backend;

use super::Store;
use super::entities::METRICS;
use super::sql::{
    Sql, decode_cursor, encode_cursor, from_us, get_f, get_i, get_os, get_s, get_time, now_us,
    page_limit, to_us,
};
use crate::error::{Error, Result};

/// Points per INSERT statement.
const CHUNK: usize = 10_000;

/// One point as its INSERT reads it: key, value, step, ts, model version, job execution.
type Row<'a> = (&'a str, f64, i64, i64, Option<i64>, Option<&'a str>);

// Bulk insert: the points travel as one JSON text parameter and the engine unpacks them, so a
// statement has two parameters whatever the batch size (binding six values a row through sqlx
// costs far more than the insert itself). Only the JSON table function differs by engine.
const INSERT_POINTS_SQLITE: &str = "INSERT INTO meta_metric_points (metric_id, key, value, step, \
    ts, model_version, job_execution_id) SELECT $1, j.value ->> 0, \
    CAST(j.value ->> 1 AS DOUBLE PRECISION), CAST(j.value ->> 2 AS BIGINT), \
    CAST(j.value ->> 3 AS BIGINT), CAST(j.value ->> 4 AS BIGINT), j.value ->> 5 \
    FROM jsonb_each($2) AS j";
const INSERT_POINTS_POSTGRES: &str = "INSERT INTO meta_metric_points (metric_id, key, value, step, \
    ts, model_version, job_execution_id) SELECT $1, j.value ->> 0, \
    CAST(j.value ->> 1 AS DOUBLE PRECISION), CAST(j.value ->> 2 AS BIGINT), \
    CAST(j.value ->> 3 AS BIGINT), CAST(j.value ->> 4 AS BIGINT), j.value ->> 5 \
    FROM json_array_elements(CAST($2 AS json)) AS j";

// A key's history comes back as one row holding a JSON array (one row through sqlx instead of
// thousands). Values are printed with 17 significant digits so they round-trip exactly.
// SQLite aggregates the rows of the ordered sub-select in order (an ORDER BY inside the
// aggregate would sort them again); PostgreSQL needs it spelled out.
const HISTORY_SQLITE: &str = "json_group_array(json_array(id, step, printf('%!.17g', value), ts, \
    model_version, job_execution_id))";
const HISTORY_POSTGRES: &str = "CAST(json_agg(json_build_array(id, step, CAST(value AS TEXT), ts, \
    model_version, job_execution_id) ORDER BY step, id) AS TEXT)";

impl Store {
    /// Appends points to a metric, all or none, in one transaction of multi-row INSERTs.
    pub async fn log_points(&self, name: &str, points: &[MetricPoint]) -> Result<PointsWritten> {
        let _timer = aiflow_db::QueryTimer::new("meta", "log_points");
        let now = now_us();
        for (i, p) in points.iter().enumerate() {
            if p.key.is_empty() || p.key.chars().count() > 200 {
                return Err(Error::unprocessable(
                    format!("points[{i}].key"),
                    format!("points[{i}].key must be 1 to 200 characters"),
                ));
            }
            if !p.value.is_finite() {
                return Err(Error::unprocessable(
                    format!("points[{i}].value"),
                    format!("points[{i}].value must be a finite number"),
                ));
            }
        }
        let metric = self.get_metric(name).await?;
        // Model versions are numbers of the metric's model; check each distinct one once.
        let versions: BTreeSet<i64> = points.iter().filter_map(|p| p.model_version).collect();
        for v in &versions {
            let ok = match (metric.kind, &metric.subject) {
                (MetricKind::Model, Some(model)) => sqlx::query_scalar::<_, i64>(
                    "SELECT v.id FROM meta_model_versions v JOIN meta_models m ON m.id = v.model_id \
                     WHERE m.name = $1 AND m.deleted_at IS NULL AND v.version = $2",
                )
                .bind(model)
                .bind(*v)
                .fetch_optional(&self.db.pool)
                .await?
                .is_some(),
                _ => false,
            };
            if !ok {
                let i = points
                    .iter()
                    .position(|p| p.model_version == Some(*v))
                    .unwrap_or(0);
                return Err(Error::unknown(
                    format!("points[{i}].model_version"),
                    format!("points[{i}].model_version: metric {name:?} has no model version {v}"),
                ));
            }
        }
        let jobs: BTreeSet<&str> = points
            .iter()
            .filter_map(|p| p.job_execution.as_deref())
            .collect();
        let mut conn = self.db.pool.acquire().await?;
        for j in jobs {
            let i = points
                .iter()
                .position(|p| p.job_execution.as_deref() == Some(j))
                .unwrap_or(0);
            Self::job_execution_ref(&mut conn, j, &format!("points[{i}].job_execution")).await?;
        }
        drop(conn);
        let mut tx = self.begin().await?;
        let insert = match self.db.backend {
            Backend::Sqlite => INSERT_POINTS_SQLITE,
            Backend::Postgres => INSERT_POINTS_POSTGRES,
        };
        // Rows go in grouped by key (a stable sort, so each key keeps its points' order and
        // the (step, id) order of its history is unchanged): the covering index then takes each
        // key's run at one place instead of jumping between keys row by row.
        let mut order: Vec<&MetricPoint> = points.iter().collect();
        order.sort_by(|a, b| a.key.cmp(&b.key));
        for chunk in order.chunks(CHUNK) {
            // One JSON array parameter per chunk: `[[key, value, step, ts, model_version, job], …]`,
            // written straight from tuples (no intermediate `serde_json::Value`s).
            let rows: Vec<Row<'_>> = chunk
                .iter()
                .map(|p| {
                    (
                        p.key.as_str(),
                        p.value,
                        p.step,
                        p.timestamp.map_or(now, to_us),
                        p.model_version,
                        p.job_execution.as_deref(),
                    )
                })
                .collect();
            let json = serde_json::to_string(&rows)
                .map_err(|e| Error::Db(sqlx::Error::Encode(e.into())))?;
            sqlx::query(insert)
                .bind(metric.id)
                .bind(json)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx, false).await?;
        tracing::debug!(
            metric = name,
            points = points.len(),
            "metric points written"
        );
        Ok(PointsWritten {
            written: points.len() as u64,
        })
    }

    /// The distinct keys of a metric with their point counts.
    pub async fn metric_keys(&self, name: &str) -> Result<BTreeMap<String, i64>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "metric_keys");
        let metric = self.get_metric(name).await?;
        let rows = sqlx::query(
            "SELECT key, COUNT(*) AS n FROM meta_metric_points WHERE metric_id = $1 GROUP BY key",
        )
        .bind(metric.id)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((get_s(r, "key")?, get_i(r, "n")?)))
            .collect()
    }

    /// One key's history, by step; bucketed into at most `max_points` (min/max/avg) on request.
    pub async fn read_points(&self, name: &str, q: &PointsQuery) -> Result<PointSeries> {
        let _timer = aiflow_db::QueryTimer::new("meta", "read_points");
        let key = q
            .key
            .clone()
            .ok_or_else(|| Error::invalid("key", "key is required"))?;
        if let (Some(a), Some(b)) = (q.step_from, q.step_to)
            && a > b
        {
            return Err(Error::invalid("step_to", "step_to is before step_from"));
        }
        let metric = self.get_metric(name).await?;
        let range = |s: &mut Sql| {
            s.push(" WHERE metric_id = ")
                .bind(metric.id)
                .push(" AND key = ")
                .bind(key.as_str());
            if let Some(a) = q.step_from {
                s.push(" AND step >= ").bind(a);
            }
            if let Some(b) = q.step_to {
                s.push(" AND step <= ").bind(b);
            }
        };
        if let Some(max_points) = q.max_points {
            if max_points == 0 {
                return Err(Error::invalid(
                    "max_points",
                    "max_points must be at least 1",
                ));
            }
            let mut s = Sql::new(
                "SELECT MIN(step) AS lo, MAX(step) AS hi, COUNT(*) AS n FROM meta_metric_points",
            );
            range(&mut s);
            let row = s.query().fetch_one(&self.db.pool).await?;
            let n = get_i(&row, "n")?;
            if n > i64::from(max_points) {
                let (lo, hi) = (get_i(&row, "lo")?, get_i(&row, "hi")?);
                let span = (hi - lo + 1).max(1);
                let width = (span + i64::from(max_points) - 1) / i64::from(max_points);
                // lo and width are integers computed here, not client text.
                let mut s = Sql::new(&format!(
                    "SELECT (step - {lo}) / {width} AS bucket, MIN(step) AS step, AVG(value) AS avg_v, \
                     MIN(value) AS min_v, MAX(value) AS max_v, COUNT(*) AS n, MAX(ts) AS ts \
                     FROM meta_metric_points"
                ));
                range(&mut s);
                s.push(" GROUP BY (step - ")
                    .push(&lo.to_string())
                    .push(") / ")
                    .push(&width.to_string())
                    .push(" ORDER BY bucket");
                let rows = s.query().fetch_all(&self.db.pool).await?;
                let points = rows
                    .iter()
                    .map(|r| {
                        Ok(PointOut {
                            step: get_i(r, "step")?,
                            value: get_f(r, "avg_v")?,
                            timestamp: get_time(r, "ts")?,
                            model_version: None,
                            job_execution: None,
                            min: Some(get_f(r, "min_v")?),
                            max: Some(get_f(r, "max_v")?),
                            count: Some(get_i(r, "n")?),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(PointSeries {
                    metric: name.to_string(),
                    key,
                    downsampled: true,
                    points,
                    next_cursor: None,
                });
            }
        }
        let limit = page_limit(q.limit, 10_000, 100_000)?;
        let agg = match self.db.backend {
            Backend::Sqlite => HISTORY_SQLITE,
            Backend::Postgres => HISTORY_POSTGRES,
        };
        let mut s = Sql::new("SELECT ");
        s.push(agg).push(
            " AS pts FROM (SELECT id, step, value, ts, model_version, job_execution_id \
             FROM meta_metric_points",
        );
        range(&mut s);
        if let Some(c) = &q.cursor {
            let parts = decode_cursor(c, 3)?;
            let bad = || {
                Error::invalid(
                    "cursor",
                    format!("cursor {c:?} is not a cursor this server gave out"),
                )
            };
            if parts[0] != "pt" {
                return Err(bad());
            }
            let step: i64 = parts[1].parse().map_err(|_| bad())?;
            let id: i64 = parts[2].parse().map_err(|_| bad())?;
            s.push(" AND (step > ")
                .bind(step)
                .push(" OR (step = ")
                .bind(step)
                .push(" AND id > ")
                .bind(id)
                .push("))");
        }
        s.push(" ORDER BY step, id LIMIT ")
            .bind(limit + 1)
            .push(") p");
        let row = s.query().fetch_one(&self.db.pool).await?;
        let text = get_os(&row, "pts")?.unwrap_or_else(|| "[]".into());
        type Raw = (i64, i64, String, i64, Option<i64>, Option<String>);
        let decode = |e: String| Error::Db(sqlx::Error::Decode(e.into()));
        let mut raw: Vec<Raw> = serde_json::from_str(&text).map_err(|e| decode(e.to_string()))?;
        let mut next = None;
        if raw.len() as i64 > limit {
            raw.truncate(limit as usize);
            if let Some(last) = raw.last() {
                next = Some(encode_cursor(&[
                    "pt",
                    &last.1.to_string(),
                    &last.0.to_string(),
                ]));
            }
        }
        let points = raw
            .into_iter()
            .map(|(_, step, value, ts, model_version, job_execution)| {
                Ok(PointOut {
                    step,
                    value: value
                        .parse()
                        .map_err(|e: std::num::ParseFloatError| decode(e.to_string()))?,
                    timestamp: from_us(ts),
                    model_version,
                    job_execution,
                    min: None,
                    max: None,
                    count: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let _ = METRICS;
        Ok(PointSeries {
            metric: name.to_string(),
            key,
            downsampled: false,
            points,
            next_cursor: next,
        })
    }
}
