//! Integration tests of the notification service: one behavioural suite run against the
//! embedded bus on SQLite and PostgreSQL and the NATS JetStream bus, the HTTP routes, and the
//! SDK's Publisher and Listener against a real server.

mod harness;
mod http;
mod suite;

use suite::bus_suite;

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

bus_suite!(
    sqlite,
    crate::harness::Kind::Sqlite,
    [
        publish_assigns_offsets,
        filters_and_wildcards,
        replay_then_live,
        idempotent_publish,
        batch_atomicity,
        bad_inputs_store_nothing,
        restart_keeps_events_and_offsets,
        slow_subscriber,
        retention_never_renumbers,
        many_publishers_many_listeners,
    ]
);

bus_suite!(
    postgres,
    crate::harness::Kind::Postgres,
    [
        publish_assigns_offsets,
        filters_and_wildcards,
        replay_then_live,
        idempotent_publish,
        batch_atomicity,
        bad_inputs_store_nothing,
        restart_keeps_events_and_offsets,
        slow_subscriber,
        retention_never_renumbers,
        many_publishers_many_listeners,
    ]
);

bus_suite!(
    nats,
    crate::harness::Kind::Nats,
    [
        publish_assigns_offsets,
        filters_and_wildcards,
        replay_then_live,
        idempotent_publish,
        batch_atomicity,
        bad_inputs_store_nothing,
        restart_keeps_events_and_offsets,
        slow_subscriber,
        retention_never_renumbers,
        many_publishers_many_listeners,
    ]
);
