//! Metric points: append-only, bulk inserted, read by key and step range, downsampled on
//! request.

use std::collections::{BTreeMap, BTreeSet};

use aiflow_api::meta::{
    MetricKind, MetricPoint, PointOut, PointSeries, PointsQuery, PointsWritten,
};
use sqlx::AssertSqlSafe;

use super::Store;
use super::entities::METRICS;
use super::sql::{
    Arg, Sql, bind_all, decode_cursor, encode_cursor, get_f, get_i, get_oi, get_os, get_s,
    get_time, now_us, page_limit, to_us,
};
use crate::error::{Error, Result};

/// Rows per multi-row INSERT (6 bound values each, well under both engines' limits).
const CHUNK: usize = 1000;

impl Store {
    /// Appends points to a metric, all or none, in one transaction of multi-row INSERTs.
    pub async fn log_points(&self, name: &str, points: &[MetricPoint]) -> Result<PointsWritten> {
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
        for chunk in points.chunks(CHUNK) {
            let mut text = String::with_capacity(40 + chunk.len() * 32);
            text.push_str(
                "INSERT INTO meta_metric_points (metric_id, key, value, step, ts, model_version, \
                 job_execution_id) VALUES ",
            );
            let mut args = Vec::with_capacity(chunk.len() * 6);
            for (i, p) in chunk.iter().enumerate() {
                let b = i * 6;
                if i > 0 {
                    text.push(',');
                }
                // The metric id is ours: inline it and bind the rest.
                text.push_str(&format!(
                    "({},${},${},${},${},${},${})",
                    metric.id,
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
                args.push(Arg::S(Some(p.key.clone())));
                args.push(Arg::F(p.value));
                args.push(Arg::I(Some(p.step)));
                args.push(Arg::I(Some(p.timestamp.map_or(now, to_us))));
                args.push(Arg::I(p.model_version));
                args.push(Arg::S(p.job_execution.clone()));
            }
            bind_all(sqlx::query(AssertSqlSafe(text)), args)
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
        let mut s = Sql::new(
            "SELECT id, step, value, ts, model_version, job_execution_id FROM meta_metric_points",
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
        s.push(" ORDER BY step, id LIMIT ").bind(limit + 1);
        let mut rows = s.query().fetch_all(&self.db.pool).await?;
        let mut next = None;
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            if let Some(last) = rows.last() {
                next = Some(encode_cursor(&[
                    "pt",
                    &get_i(last, "step")?.to_string(),
                    &get_i(last, "id")?.to_string(),
                ]));
            }
        }
        let points = rows
            .iter()
            .map(|r| {
                Ok(PointOut {
                    step: get_i(r, "step")?,
                    value: get_f(r, "value")?,
                    timestamp: get_time(r, "ts")?,
                    model_version: get_oi(r, "model_version")?,
                    job_execution: get_os(r, "job_execution_id")?,
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
