//! The behavioural suite every bus passes; `bus_suite!` runs it per backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aiflow_api::event::EventLimits;
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_notification::{Error, EventBus, EventStream};
use futures::StreamExt;

use crate::harness::{Harness, Opts};

/// The next `n` events of a stream, failing the test after `secs` seconds.
pub(crate) async fn take(stream: &mut EventStream, n: usize, secs: u64) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("stream failed: {e}"),
            Ok(None) => panic!("stream ended after {} of {n} events", out.len()),
            Err(_) => panic!("timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Nothing more arrives within `ms` milliseconds.
pub(crate) async fn assert_quiet(stream: &mut EventStream, ms: u64) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(ms), stream.next()).await {
        panic!("unexpected item: {item:?}");
    }
}

fn assert_strictly_increasing(events: &[Event]) {
    for w in events.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "{} then {}",
            w[0].offset,
            w[1].offset
        );
    }
}

fn invalid_field(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Invalid { field, message }) => {
            assert!(!message.is_empty());
            assert!(
                message.starts_with(|c: char| c.is_lowercase()),
                "lower-case message: {message}"
            );
            field
        }
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
}

pub(crate) async fn publish_assigns_offsets(h: &Harness) {
    let bus = h.open().await;
    assert_eq!(bus.latest_offset().await.unwrap(), Offset(0));
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let mut offsets = Vec::new();
    for i in 0..20 {
        let e = bus
            .publish(NewEvent::new(format!("k{i}"), format!("v{i}")))
            .await
            .unwrap();
        assert_eq!(e.namespace, "default");
        assert_eq!(e.event_type, "UNDEFINED");
        assert_eq!(e.value, format!("v{i}"));
        assert!(e.created_at >= before);
        offsets.push(e.offset);
    }
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(bus.latest_offset().await.unwrap(), *offsets.last().unwrap());
    let listed = bus
        .list(&EventFilter::default(), Offset(0), 100)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|e| e.offset).collect::<Vec<_>>(), offsets);
    assert_eq!(listed[3].key, "k3");
    // A full event round-trips.
    let full = NewEvent::new("model/fraud", "v7")
        .namespace("ns")
        .event_type("MODEL_VERSION_CREATED")
        .sender("trainer")
        .context(serde_json::json!({"execution": "e-1", "n": [1, 2]}));
    let stored = bus.publish(full.clone()).await.unwrap();
    let read = bus
        .list(&EventFilter::default(), offsets[19], 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].offset, stored.offset);
    assert_eq!(read[0].namespace, "ns");
    assert_eq!(read[0].key, "model/fraud");
    assert_eq!(read[0].event_type, "MODEL_VERSION_CREATED");
    assert_eq!(read[0].sender.as_deref(), Some("trainer"));
    assert_eq!(read[0].context, full.context);
    // Text that could break SQL quoting round-trips unchanged.
    let hostile = "it's \\' \\\\ \" \t \n ü'); DROP TABLE events; --";
    let stored = bus
        .publish(
            NewEvent::new(format!("q'{hostile}").replace(['\t', '\n'], ""), hostile)
                .sender("o'brien\\")
                .context(serde_json::json!({"s": hostile})),
        )
        .await
        .unwrap();
    let read = bus
        .list(&EventFilter::default(), Offset(stored.offset.0 - 1), 1)
        .await
        .unwrap();
    assert_eq!(read[0].value, hostile);
    assert_eq!(read[0].key, stored.key);
    assert_eq!(read[0].sender.as_deref(), Some("o'brien\\"));
    assert_eq!(read[0].context, Some(serde_json::json!({"s": hostile})));
    // Concurrent publishers: offsets unique, listing in offset order.
    let mut tasks = Vec::new();
    for p in 0..8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for i in 0..25 {
                v.push(
                    bus.publish(NewEvent::new(format!("c{p}"), i.to_string()))
                        .await
                        .unwrap()
                        .offset,
                );
            }
            v
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        let v = t.await.unwrap();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        all.extend(v);
    }
    assert_eq!(all.len(), 200);
    let listed = bus
        .list(&EventFilter::default(), stored.offset, 1000)
        .await
        .unwrap();
    assert_eq!(listed.len(), 200);
    assert_strictly_increasing(&listed);
}

pub(crate) async fn filters_and_wildcards(h: &Harness) {
    let bus = h.open().await;
    let events = [
        NewEvent::new("dataset/raw/2026-11-25", "a").event_type("DATASET_UPDATED"),
        NewEvent::new("dataset/raw/2026-11-26", "b")
            .event_type("DATASET_UPDATED")
            .sender("ingest"),
        NewEvent::new("dataset/clean/x", "c").event_type("DATASET_UPDATED"),
        NewEvent::new("model/fraud", "d").event_type("MODEL_VERSION_CREATED"),
        NewEvent::new("model/fraud", "e")
            .event_type("MODEL_PROMOTED")
            .namespace("prod"),
        NewEvent::new("Model/Fraud", "f"),
        NewEvent::new("a.b*c>d e%_?[x]", "g").namespace("weird ns.ü"),
        NewEvent::new("a.bXc>d e%_?[x]", "h").namespace("weird ns.ü"),
    ];
    bus.publish_batch(events.to_vec()).await.unwrap();
    let values = |v: Vec<Event>| v.into_iter().map(|e| e.value).collect::<Vec<_>>().join("");
    let check = |filter: EventFilter, expect: &'static str| {
        let bus = bus.clone();
        async move {
            let got = values(bus.list(&filter, Offset(0), 100).await.unwrap());
            assert_eq!(got, expect, "list {filter:?}");
            let n = bus.count(&filter, Offset(0)).await.unwrap();
            assert_eq!(n, expect.len() as u64, "count {filter:?}");
            // A subscription from the start sees the same.
            let mut s = bus.subscribe(filter.clone(), Offset(0)).await.unwrap();
            let got = values(take(&mut s, expect.len(), 10).await);
            assert_eq!(got, expect, "subscribe {filter:?}");
        }
    };
    let key = |k: &str| EventFilter {
        key: Some(k.into()),
        ..EventFilter::default()
    };
    check(EventFilter::default(), "abcdefgh").await;
    check(key("dataset/raw/*"), "ab").await;
    check(key("dataset/*"), "abc").await;
    check(key("*/fraud"), "de").await;
    check(key("model/fraud"), "de").await;
    check(key("Model/*"), "f").await;
    check(key("*x*"), "cgh").await;
    check(key("a.b*c>d e%_?[x]"), "gh").await;
    check(key("a.b\u{2a}"), "gh").await;
    check(key("a.bXc>d e%_?[x]"), "h").await;
    check(key("*%_?[x]"), "gh").await;
    check(key("nothing*"), "").await;
    check(
        EventFilter {
            namespace: Some("prod".into()),
            ..EventFilter::default()
        },
        "e",
    )
    .await;
    check(
        EventFilter {
            namespace: Some("weird ns.ü".into()),
            ..key("*")
        },
        "gh",
    )
    .await;
    check(
        EventFilter {
            event_types: vec!["MODEL_PROMOTED".into(), "DATASET_UPDATED".into()],
            ..EventFilter::default()
        },
        "abce",
    )
    .await;
    check(
        EventFilter {
            sender: Some("ingest".into()),
            ..EventFilter::default()
        },
        "b",
    )
    .await;
    check(
        EventFilter {
            namespace: Some("default".into()),
            event_types: vec!["MODEL_VERSION_CREATED".into()],
            ..key("model/*")
        },
        "d",
    )
    .await;
    // Offset ranges and limits.
    let all = bus
        .list(&EventFilter::default(), Offset(0), 100)
        .await
        .unwrap();
    let page = bus
        .list(&EventFilter::default(), all[2].offset, 3)
        .await
        .unwrap();
    assert_eq!(values(page), "def");
    assert_eq!(
        bus.count(&EventFilter::default(), all[5].offset)
            .await
            .unwrap(),
        2
    );
    assert!(
        bus.list(&EventFilter::default(), all[7].offset, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub(crate) async fn replay_then_live(h: &Harness) {
    let bus = h.open().await;
    const N: usize = 3000;
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let e = NewEvent::new(if i % 2 == 0 { "even" } else { "odd" }, i.to_string());
                if i % 10 == 0 {
                    bus.publish_batch(vec![e]).await.unwrap();
                } else {
                    bus.publish(e).await.unwrap();
                }
            }
        })
    };
    // Subscribe at several moments while the publisher runs.
    let mut subs = Vec::new();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        subs.push((
            bus.subscribe(EventFilter::default(), Offset(0))
                .await
                .unwrap(),
            bus.subscribe(
                EventFilter {
                    key: Some("odd".into()),
                    ..EventFilter::default()
                },
                Offset(0),
            )
            .await
            .unwrap(),
        ));
    }
    for (mut all, mut odd) in subs {
        let got = take(&mut all, N, 60).await;
        assert_strictly_increasing(&got);
        let values: Vec<usize> = got.iter().map(|e| e.value.parse().unwrap()).collect();
        assert_eq!(values, (0..N).collect::<Vec<_>>());
        let got = take(&mut odd, N / 2, 60).await;
        assert!(got.iter().all(|e| e.key == "odd"));
        assert_strictly_increasing(&got);
    }
    publisher.await.unwrap();
    // From the middle: exactly what follows.
    let all = bus
        .list(&EventFilter::default(), Offset(0), N)
        .await
        .unwrap();
    let mid = all[N / 2].offset;
    let mut s = bus.subscribe(EventFilter::default(), mid).await.unwrap();
    let got = take(&mut s, N / 2 - 1, 30).await;
    assert_eq!(got.first().map(|e| e.offset), Some(all[N / 2 + 1].offset));
    assert_quiet(&mut s, 200).await;
    let live = bus.publish(NewEvent::new("late", "x")).await.unwrap();
    assert_eq!(take(&mut s, 1, 10).await[0].offset, live.offset);
    assert_quiet(&mut s, 200).await;
}

pub(crate) async fn idempotent_publish(h: &Harness) {
    let bus = h.open().await;
    let first = bus
        .publish(NewEvent::new("k", "1").idempotency_key("job-7/attempt-1"))
        .await
        .unwrap();
    bus.publish(NewEvent::new("other", "x")).await.unwrap();
    let again = bus
        .publish(NewEvent::new("k", "2").idempotency_key("job-7/attempt-1"))
        .await
        .unwrap();
    assert_eq!(again.offset, first.offset);
    assert_eq!(again.value, "1", "the stored event is returned");
    // In a batch, and twice within one batch.
    let batch = bus
        .publish_batch(vec![
            NewEvent::new("k", "3").idempotency_key("job-7/attempt-1"),
            NewEvent::new("k", "4").idempotency_key("new-key"),
            NewEvent::new("k", "5").idempotency_key("new-key"),
            NewEvent::new("k", "6"),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].offset, first.offset);
    assert_eq!(batch[1].offset, batch[2].offset);
    assert!(batch[3].offset > batch[1].offset);
    let stored = bus
        .list(&EventFilter::default(), Offset(0), 100)
        .await
        .unwrap();
    let values: Vec<&str> = stored.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(values, ["1", "x", "4", "6"]);
    // Concurrent repeats of one key store it once.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            bus.publish(NewEvent::new("race", i.to_string()).idempotency_key("race"))
                .await
                .unwrap()
                .offset
        }));
    }
    let mut offsets = HashSet::new();
    for t in tasks {
        offsets.insert(t.await.unwrap());
    }
    assert_eq!(offsets.len(), 1);
    assert_eq!(
        bus.count(
            &EventFilter {
                key: Some("race".into()),
                ..EventFilter::default()
            },
            Offset(0)
        )
        .await
        .unwrap(),
        1
    );
}

pub(crate) async fn batch_atomicity(h: &Harness) {
    let bus = h.open().await;
    let batch: Vec<NewEvent> = (0..50).map(|i| NewEvent::new("b", i.to_string())).collect();
    let stored = bus.publish_batch(batch).await.unwrap();
    assert_eq!(stored.len(), 50);
    assert_strictly_increasing(&stored);
    if h.kind != crate::harness::Kind::Nats {
        // The embedded bus gives a batch consecutive offsets.
        assert_eq!(stored[49].offset.0 - stored[0].offset.0, 49);
    }
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.value == i.to_string())
    );
    let latest = bus.latest_offset().await.unwrap();
    let mut bad: Vec<NewEvent> = (0..5).map(|i| NewEvent::new("b", i.to_string())).collect();
    bad[3].key = String::new();
    assert_eq!(invalid_field(bus.publish_batch(bad).await), "[3].key");
    assert_eq!(bus.latest_offset().await.unwrap(), latest);
    assert_eq!(
        bus.count(&EventFilter::default(), Offset(0)).await.unwrap(),
        50
    );
    assert!(bus.publish_batch(Vec::new()).await.unwrap().is_empty());
}

pub(crate) async fn bad_inputs_store_nothing(h: &Harness) {
    let limits = EventLimits {
        max_value_bytes: 1000,
        max_context_bytes: 100,
    };
    let bus = h
        .open_with(Opts {
            limits: Some(limits),
            ..Opts::default()
        })
        .await;
    let long = "k".repeat(257);
    let cases: Vec<(NewEvent, &str)> = vec![
        (NewEvent::new("", "v"), "key"),
        (NewEvent::new(long.clone(), "v"), "key"),
        (NewEvent::new("a\nb", "v"), "key"),
        (NewEvent::new("k", "v").namespace(""), "namespace"),
        (NewEvent::new("k", "v").namespace(long.clone()), "namespace"),
        (NewEvent::new("k", "v").namespace("x\u{7}"), "namespace"),
        (NewEvent::new("k", "v").event_type(""), "event_type"),
        (NewEvent::new("k", "v").sender("\t"), "sender"),
        (
            NewEvent::new("k", "v").idempotency_key(""),
            "idempotency_key",
        ),
        (NewEvent::new("k", "v".repeat(1001)), "value"),
        (NewEvent::new("k", "a\0b"), "value"),
        (
            NewEvent::new("k", "v").context(serde_json::json!({"big": "x".repeat(200)})),
            "context",
        ),
    ];
    for (event, field) in cases {
        assert_eq!(invalid_field(bus.publish(event.clone()).await), field);
        assert_eq!(
            invalid_field(
                bus.publish_batch(vec![NewEvent::new("ok", ""), event])
                    .await
            ),
            format!("[1].{field}")
        );
    }
    // Exactly at the limits is fine.
    bus.publish(NewEvent::new("k".repeat(256), "v".repeat(1000)))
        .await
        .unwrap();
    assert_eq!(
        bus.count(&EventFilter::default(), Offset(0)).await.unwrap(),
        1
    );
}

pub(crate) async fn restart_keeps_events_and_offsets(h: &Harness) {
    let (last, seen) = {
        let bus = h.open().await;
        let stored = bus
            .publish_batch((0..30).map(|i| NewEvent::new("r", i.to_string())).collect())
            .await
            .unwrap();
        let mut s = bus
            .subscribe(EventFilter::default(), Offset(0))
            .await
            .unwrap();
        let seen = take(&mut s, 10, 10).await;
        (stored[29].offset, seen[9].offset)
    };
    // Let the old bus stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = h.open().await;
    assert_eq!(bus.latest_offset().await.unwrap(), last);
    assert_eq!(
        bus.count(&EventFilter::default(), Offset(0)).await.unwrap(),
        30
    );
    // The listener resumes after what it saw.
    let mut s = bus.subscribe(EventFilter::default(), seen).await.unwrap();
    let rest = take(&mut s, 20, 10).await;
    assert_eq!(rest[0].value, "10");
    assert_eq!(rest[19].offset, last);
    let next = bus.publish(NewEvent::new("r", "30")).await.unwrap();
    assert!(next.offset > last);
    assert_eq!(take(&mut s, 1, 10).await[0].offset, next.offset);
}

pub(crate) async fn slow_subscriber(h: &Harness) {
    let bus = h
        .open_with(Opts {
            live_capacity: Some(16),
            ..Opts::default()
        })
        .await;
    let mut stalled = bus
        .subscribe(EventFilter::default(), Offset(0))
        .await
        .unwrap();
    let mut reader = bus
        .subscribe(EventFilter::default(), Offset(0))
        .await
        .unwrap();
    // The stalled one reads one event, then nothing while 8 publishers store 4,000 events.
    let first = bus.publish(NewEvent::new("s", "first")).await.unwrap();
    assert_eq!(take(&mut stalled, 1, 10).await[0].offset, first.offset);
    let reading = tokio::spawn(async move { take(&mut reader, 4001, 60).await });
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for p in 0..8 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500 {
                bus.publish(NewEvent::new("s", format!("{p}-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let publish_time = started.elapsed();
    // The other subscriber was not held back.
    let got = reading.await.unwrap();
    assert_strictly_increasing(&got);
    // The stalled subscriber wakes up and gets everything, in order, once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest = take(&mut stalled, 4000, 60).await;
    assert_strictly_increasing(&rest);
    assert!(rest[0].offset > first.offset);
    assert_eq!(rest.last().unwrap().offset, got.last().unwrap().offset);
    assert_quiet(&mut stalled, 200).await;
    eprintln!(
        "{:?}: 4,000 publishes with a stalled subscriber took {publish_time:?}",
        h.kind
    );
}

pub(crate) async fn retention_never_renumbers(h: &Harness) {
    let opts = Opts {
        max_count: Some(10),
        ..Opts::default()
    };
    let bus = h.open_with(opts.clone()).await;
    let stored = bus
        .publish_batch((0..25).map(|i| NewEvent::new("t", i.to_string())).collect())
        .await
        .unwrap();
    h.apply_retention(&bus, opts).await;
    let left = bus
        .list(&EventFilter::default(), Offset(0), 100)
        .await
        .unwrap();
    assert_eq!(left.len(), 10);
    assert_eq!(left[0].offset, stored[15].offset);
    assert_eq!(left[0].value, "15");
    assert_eq!(bus.latest_offset().await.unwrap(), stored[24].offset);
    let next = bus.publish(NewEvent::new("t", "25")).await.unwrap();
    assert_eq!(next.offset.0, stored[24].offset.0 + 1);
    // A subscriber from before the oldest kept event gets what is left.
    let mut s = bus
        .subscribe(EventFilter::default(), Offset(0))
        .await
        .unwrap();
    let got = take(&mut s, 10, 10).await;
    assert!(got[0].offset > stored[14].offset);
}

/// 8 publishers × 10,000 events, 4 listeners: each listener sees all 80,000 in offset order,
/// once, and each publisher's events in the order it sent them.
pub(crate) async fn many_publishers_many_listeners(h: &Harness) {
    const PUBLISHERS: usize = 8;
    const PER: usize = 10_000;
    let bus = h.open().await;
    let started = std::time::Instant::now();
    let mut listeners = Vec::new();
    for l in 0..4 {
        let s = bus
            .subscribe(EventFilter::default(), Offset(0))
            .await
            .unwrap();
        listeners.push(tokio::spawn(check_listener(s, l, PUBLISHERS, PER)));
    }
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let bus = bus.clone();
        // Half the publishers send single events, half batches of 25: both in their order.
        tasks.push(tokio::spawn(async move {
            if p % 2 == 0 {
                for i in 0..PER {
                    bus.publish(NewEvent::new(format!("p{p}"), i.to_string()))
                        .await
                        .unwrap();
                }
            } else {
                for b in (0..PER).step_by(25) {
                    let batch = (b..b + 25)
                        .map(|i| NewEvent::new(format!("p{p}"), i.to_string()))
                        .collect();
                    bus.publish_batch(batch).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = started.elapsed();
    for l in listeners {
        l.await.unwrap();
    }
    eprintln!(
        "{:?}: {} events published in {published:?}, all listeners done in {:?}",
        h.kind,
        PUBLISHERS * PER,
        started.elapsed()
    );
}

async fn check_listener(mut s: EventStream, l: usize, publishers: usize, per: usize) {
    let mut next = vec![0usize; publishers];
    let mut last = Offset(0);
    for n in 0..publishers * per {
        let e = match tokio::time::timeout(Duration::from_secs(60), s.next()).await {
            Ok(Some(Ok(e))) => e,
            other => panic!("listener {l}: no event {n}: {other:?}"),
        };
        assert!(e.offset > last, "listener {l}: {} after {last}", e.offset);
        last = e.offset;
        let p: usize = e.key[1..].parse().unwrap();
        let i: usize = e.value.parse().unwrap();
        assert_eq!(i, next[p], "listener {l}: publisher {p} out of order");
        next[p] += 1;
    }
    assert!(next.iter().all(|&n| n == per));
    assert_quiet(&mut s, 100).await;
}

/// Keeps `Arc` in scope for the macro users.
#[allow(dead_code)]
pub(crate) type Bus = Arc<dyn EventBus>;

macro_rules! bus_suite {
    ($module:ident, $kind:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::init_tracing();
                    if let Some(h) = crate::harness::Harness::new($kind).await {
                        crate::suite::$test(&h).await;
                    }
                }
            )*
        }
    };
}

pub(crate) use bus_suite;
