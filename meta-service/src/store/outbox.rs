//! The outbox of meta events: rows written in the same transaction as the change they
//! announce, published to the bus by [`crate::spawn_outbox_relay`].

use aiflow_api::NewEvent;
use aiflow_api::event::DEFAULT_NAMESPACE;

use super::sql::{get_i, get_os, get_s, now_us};
use super::{Store, Tx};
use crate::error::Result;

/// The sender of every meta event.
pub const SENDER: &str = "aiflow-meta";

/// One stored meta event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub namespace: String,
    pub key: String,
    pub value: String,
    pub event_type: String,
    pub context: Option<serde_json::Value>,
    pub sent: bool,
}

impl OutboxRow {
    /// The event to publish; its idempotency key makes a re-publish after a crash harmless.
    #[must_use]
    pub fn to_event(&self) -> NewEvent {
        NewEvent {
            namespace: Some(self.namespace.clone()),
            key: self.key.clone(),
            value: self.value.clone(),
            event_type: Some(self.event_type.clone()),
            sender: Some(SENDER.to_string()),
            context: self.context.clone(),
            idempotency_key: Some(format!("meta-outbox-{}", self.id)),
        }
    }
}

/// Writes one meta event into the outbox inside `tx`.
pub(crate) async fn enqueue(
    tx: &mut Tx,
    key: &str,
    value: &str,
    event_type: &str,
    context: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO meta_outbox (namespace, key, value, event_type, context, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(DEFAULT_NAMESPACE)
    .bind(key)
    .bind(value)
    .bind(event_type)
    .bind(context.to_string())
    .bind(now_us())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn outbox_row(r: &sqlx::any::AnyRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: get_i(r, "id")?,
        namespace: get_s(r, "namespace")?,
        key: get_s(r, "key")?,
        value: get_s(r, "value")?,
        event_type: get_s(r, "event_type")?,
        context: get_os(r, "context")?.and_then(|c| serde_json::from_str(&c).ok()),
        sent: super::sql::get_oi(r, "sent_at")?.is_some(),
    })
}

impl Store {
    /// Unsent outbox rows, oldest first.
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "pending_outbox");
        let rows = sqlx::query(
            "SELECT id, namespace, key, value, event_type, context, sent_at FROM meta_outbox \
             WHERE sent_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Every outbox row (sent or not), oldest first; for tests and `aiflow status`.
    pub async fn all_outbox(&self) -> Result<Vec<OutboxRow>> {
        let _timer = aiflow_db::QueryTimer::new("meta", "all_outbox");
        let rows = sqlx::query(
            "SELECT id, namespace, key, value, event_type, context, sent_at FROM meta_outbox ORDER BY id",
        )
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Marks a row as published at `offset`.
    pub async fn mark_outbox_sent(&self, id: i64, offset: i64) -> Result<()> {
        let _timer = aiflow_db::QueryTimer::new("meta", "mark_outbox_sent");
        sqlx::query("UPDATE meta_outbox SET sent_at = $1, event_offset = $2 WHERE id = $3")
            .bind(now_us())
            .bind(offset)
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}
