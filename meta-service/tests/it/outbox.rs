//! Meta events reach the real embedded bus through the relay, once each, also after the
//! relay died between publishing and marking a row sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_meta::relay_once;
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus, EventStream};
use axum::http::Method;
use serde_json::json;

use crate::{App, both};

both!(
    relay_publishes_once,
    a_change_answers_once_its_event_is_on_the_bus
);

/// A bus that fails after `ok` publishes (a relay crash or a bus outage mid-way), each publish
/// taking `delay` first.
struct FlakyBus {
    inner: Arc<dyn EventBus>,
    ok: AtomicUsize,
    delay: Duration,
}

#[async_trait::async_trait]
impl EventBus for FlakyBus {
    async fn publish(&self, event: NewEvent) -> Result<Event, aiflow_notification::Error> {
        tokio::time::sleep(self.delay).await;
        if self
            .ok
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(aiflow_notification::Error::Unavailable("flaky".into()));
        }
        self.inner.publish(event).await
    }
    async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Event>, aiflow_notification::Error> {
        self.inner.publish_batch(events).await
    }
    async fn list(
        &self,
        f: &EventFilter,
        after: Offset,
        limit: usize,
    ) -> Result<Vec<Event>, aiflow_notification::Error> {
        self.inner.list(f, after, limit).await
    }
    async fn count(
        &self,
        f: &EventFilter,
        after: Offset,
    ) -> Result<u64, aiflow_notification::Error> {
        self.inner.count(f, after).await
    }
    async fn latest_offset(&self) -> Result<Offset, aiflow_notification::Error> {
        self.inner.latest_offset().await
    }
    async fn subscribe(
        &self,
        f: EventFilter,
        after: Offset,
    ) -> Result<EventStream, aiflow_notification::Error> {
        self.inner.subscribe(f, after).await
    }
    async fn ping(&self) -> bool {
        true
    }
    fn backend(&self) -> &'static str {
        "flaky"
    }
}

pub(crate) async fn all_events(bus: &dyn EventBus) -> Vec<Event> {
    bus.list(&EventFilter::default(), Offset(0), 100_000)
        .await
        .unwrap()
}

async fn relay_publishes_once(app: App) {
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(app.db.db.clone(), EmbeddedConfig::default())
            .await
            .unwrap(),
    );
    app.ok_post("/models", json!({"name": "fraud"})).await;
    for _ in 0..3 {
        app.ok_post("/models/fraud/versions", json!({})).await;
    }
    app.call(
        Method::PATCH,
        "/models/fraud/versions/2",
        Some(json!({"stage": "VALIDATED"})),
    )
    .await;
    app.call(
        Method::PUT,
        "/models/fraud/aliases/champion",
        Some(json!({"version": 2})),
    )
    .await;
    assert_eq!(app.store.pending_outbox(100).await.unwrap().len(), 5);

    // the relay dies after two publishes
    let flaky = FlakyBus {
        inner: bus.clone(),
        ok: AtomicUsize::new(2),
        delay: Duration::ZERO,
    };
    assert!(relay_once(&app.store, &flaky).await.is_err());
    assert_eq!(app.store.pending_outbox(100).await.unwrap().len(), 3);
    // ... and once more between publishing and marking sent: forget that rows were sent
    sqlx::query(
        "UPDATE meta_outbox SET sent_at = NULL WHERE id IN (SELECT MIN(id) FROM meta_outbox)",
    )
    .execute(&app.db.db.pool)
    .await
    .unwrap();

    // the spawned relay recovers everything, each event once
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = aiflow_meta::spawn_outbox_relay(app.store.clone(), bus.clone(), rx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !app.store.pending_outbox(100).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // a new change is relayed promptly (woken by the commit, not the poll)
    app.ok_post("/models/fraud/versions", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !app.store.pending_outbox(100).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "relay was not woken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // On PostgreSQL a change committed by another server (another store, which cannot wake this
    // relay in-process) wakes it through NOTIFY, long before its minute-long sweep.
    let mut extra = 0;
    if app.db.db.backend == aiflow_db::Backend::Postgres {
        let other = aiflow_meta::Store::new(app.db.db.clone());
        other
            .create_model_version("fraud", &Default::default())
            .await
            .unwrap();
        extra = 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !app.store.pending_outbox(100).await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "relay was not woken by NOTIFY"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tx.send(true).unwrap();
    handle.await.unwrap();

    let events = all_events(bus.as_ref()).await;
    let got: Vec<(String, String, String)> = events
        .iter()
        .map(|e| (e.key.clone(), e.event_type.clone(), e.value.clone()))
        .collect();
    let want: Vec<(String, String, String)> = [
        ("model/fraud", "MODEL_VERSION_CREATED", "1"),
        ("model/fraud", "MODEL_VERSION_CREATED", "2"),
        ("model/fraud", "MODEL_VERSION_CREATED", "3"),
        ("model/fraud", "MODEL_VALIDATED", "2"),
        ("model/fraud", "MODEL_ALIAS_MOVED", "2"),
        ("model/fraud", "MODEL_VERSION_CREATED", "4"),
        ("model/fraud", "MODEL_VERSION_CREATED", "5"),
    ][..6 + extra]
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    assert!(
        events
            .iter()
            .all(|e| e.sender.as_deref() == Some(aiflow_meta::SENDER))
    );
}

/// With a relay running, the request that registers a model version answers once its event is
/// on the bus, even when publishing is slow; with the bus down it still answers (the change
/// stands and its event waits in the outbox).
async fn a_change_answers_once_its_event_is_on_the_bus(app: App) {
    let bus: Arc<dyn EventBus> = Arc::new(
        EmbeddedBus::start(app.db.db.clone(), EmbeddedConfig::default())
            .await
            .unwrap(),
    );
    let slow = Arc::new(FlakyBus {
        inner: bus.clone(),
        ok: AtomicUsize::new(usize::MAX),
        delay: Duration::from_millis(300),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let relay = aiflow_meta::spawn_outbox_relay(app.store.clone(), slow, rx);
    app.ok_post("/models", json!({"name": "churn"})).await;
    for version in ["1", "2"] {
        app.ok_post("/models/churn/versions", json!({})).await;
        let events = all_events(bus.as_ref()).await;
        assert!(
            events
                .iter()
                .any(|e| e.key == "model/churn" && e.value == version),
            "version {version} answered before its event was published: {events:?}"
        );
    }
    tx.send(true).unwrap();
    relay.await.unwrap();

    // The bus is down: the registration is stored and answered, its event stays pending.
    let down = Arc::new(FlakyBus {
        inner: bus.clone(),
        ok: AtomicUsize::new(0),
        delay: Duration::ZERO,
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let relay = aiflow_meta::spawn_outbox_relay(app.store.clone(), down, rx);
    let v = app.ok_post("/models/churn/versions", json!({})).await;
    assert_eq!(v["version"], 3, "{v}");
    let pending = app.store.pending_outbox(100).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].value, "3");
    tx.send(true).unwrap();
    relay.await.unwrap();
}
