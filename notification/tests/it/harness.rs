//! A bus per test on each backend: a fresh SQLite file, a fresh PostgreSQL database, or a NATS
//! stream of its own (deleted afterwards).

use std::sync::Arc;

use aiflow_api::event::EventLimits;
use aiflow_db::testing::{TestDb, server_reachable};
use aiflow_db::{Db, DbConfig};
use aiflow_notification::{EmbeddedBus, EmbeddedConfig, EventBus, NatsBus, NatsConfig, Retention};

pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
    Nats,
}

/// Options a test may change.
#[derive(Debug, Clone, Default)]
pub(crate) struct Opts {
    pub(crate) limits: Option<EventLimits>,
    pub(crate) max_count: Option<u64>,
    pub(crate) live_capacity: Option<usize>,
}

pub(crate) struct Harness {
    pub(crate) kind: Kind,
    db: Option<TestDb>,
    nats_stream: String,
}

impl Harness {
    /// `None` (after a loud notice) when the backend's server is not running.
    pub(crate) async fn new(kind: Kind) -> Option<Harness> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db = match kind {
            Kind::Sqlite => Some(TestDb::sqlite().await),
            Kind::Postgres => Some(TestDb::postgres().await?),
            Kind::Nats => {
                if !server_reachable("NATS", NATS_URL) {
                    return None;
                }
                None
            }
        };
        Some(Harness {
            kind,
            db,
            nats_stream: format!("T_{id}"),
        })
    }

    pub(crate) async fn open(&self) -> Arc<dyn EventBus> {
        self.open_with(Opts::default()).await
    }

    /// A new bus on this test's storage, as a restarted process would open it.
    pub(crate) async fn open_with(&self, opts: Opts) -> Arc<dyn EventBus> {
        let limits = opts.limits.unwrap_or_default();
        match self.kind {
            Kind::Sqlite | Kind::Postgres => {
                let url = &self.db.as_ref().expect("test db").url;
                let db = Db::connect(&DbConfig::new(url)).await.expect("connect");
                let mut config = EmbeddedConfig {
                    limits,
                    retention: Retention {
                        max_age: None,
                        max_count: opts.max_count,
                    },
                    ..EmbeddedConfig::default()
                };
                if let Some(c) = opts.live_capacity {
                    config.live_capacity = c;
                }
                Arc::new(EmbeddedBus::start(db, config).await.expect("embedded bus"))
            }
            Kind::Nats => {
                let mut config = NatsConfig::new(NATS_URL)
                    .stream(&self.nats_stream)
                    .subject_prefix(format!("t.{}", self.nats_stream.to_lowercase()));
                config.limits = limits;
                config.max_count = opts.max_count;
                Arc::new(NatsBus::connect(config).await.expect("nats bus"))
            }
        }
    }

    /// Applies retention now (embedded); JetStream applies it by itself.
    pub(crate) async fn apply_retention(&self, bus: &Arc<dyn EventBus>, opts: Opts) {
        if self.kind != Kind::Nats {
            let _ = bus;
            let db = &self.db.as_ref().expect("test db").url;
            let db = Db::connect(&DbConfig::new(db)).await.expect("connect");
            let bus = EmbeddedBus::start(
                db,
                EmbeddedConfig {
                    retention: Retention {
                        max_age: None,
                        max_count: opts.max_count,
                    },
                    ..EmbeddedConfig::default()
                },
            )
            .await
            .expect("bus");
            bus.apply_retention().await.expect("retention");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.kind == Kind::Nats {
            let name = self.nats_stream.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(client) = async_nats::connect(NATS_URL).await {
                        let js = async_nats::jetstream::new(client);
                        let _ = js.delete_stream(&name).await;
                    }
                });
            })
            .join();
        }
    }
}
