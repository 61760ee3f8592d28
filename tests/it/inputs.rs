//! Hostile input, in the ordinary test run: the checks of the fuzz targets (`fuzz/src/lib.rs`,
//! shared with `cargo fuzz`) over the committed seeds, the inputs fuzzing once crashed on, and a
//! few hundred proptest cases per parser. Errors, never panics or hangs; see `.ci/fuzz.sh` for
//! the long run.

#[path = "../../fuzz/src/lib.rs"]
#[allow(unreachable_pub, dead_code)]
mod checks;

use std::path::Path;

use proptest::prelude::*;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read seed"))
        .collect()
}

#[test]
fn seeds_pass_every_check() {
    for s in seeds("graph") {
        checks::check_document(&String::from_utf8_lossy(&s));
    }
    for s in seeds("event_filter") {
        checks::check_event_filter(&s);
    }
    for s in seeds("tag_uri") {
        checks::check_tag_uri(&s);
    }
    for s in seeds("cron") {
        checks::check_trigger(&s);
    }
}

/// Inputs that once crashed a fuzz target, kept as regression tests.
#[test]
fn inputs_fuzzing_crashed_on() {
    // An interval of ten million years: `last + interval` overflowed chrono's range.
    checks::check_trigger(b"\n2\n,\n \x0c\n,\n 333333333333322");
}

#[test]
fn glob_reference_agrees_on_known_cases() {
    for (p, k, m) in [
        ("a*a", "aa", true),
        ("a*a", "a", false),
        ("*", "", true),
        ("", "", true),
        ("", "x", false),
        ("**x", "x", true),
        ("x*y*", "xy", true),
        ("é*", "éa", true),
    ] {
        assert_eq!(checks::glob_reference(p, k), m, "{p:?} {k:?}");
    }
}

/// A seed with a few random byte edits: the parser sees nearly valid documents.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    )
        .prop_map(move |(i, edits)| {
            let mut s = seeds[i].clone();
            for (at, op, b) in edits {
                let pos = if s.is_empty() { 0 } else { at.index(s.len()) };
                match op {
                    0 if !s.is_empty() => {
                        s.remove(pos);
                    }
                    1 if !s.is_empty() => s[pos] = b,
                    _ => s.insert(pos, b),
                }
            }
            s
        })
}

const JSONISH: &str = r#"[\[\]{}:,"0-9a-z_ *\-/.\\]{0,40}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn graph_documents_with_edits(doc in mutated(seeds("graph"))) {
        checks::check_document(&String::from_utf8_lossy(&doc));
    }

    #[test]
    fn graph_documents_from_json_shapes(
        name in "[a-z.]{0,3}",
        nodes in proptest::collection::vec(("[a-c]{0,2}", JSONISH), 0..5),
        edges in proptest::collection::vec(("[a-c]{0,2}", "[a-c]{0,2}"), 0..6),
        trigger in prop_oneof![
            "[0-9*/ ,-]{0,20}".prop_map(|c| format!(r#"{{"cron":{c:?}}}"#)),
            any::<u64>().prop_map(|i| format!(r#"{{"interval_s":{i}}}"#)),
            "[a*/]{0,6}".prop_map(|k| format!(r#"{{"event":{{"key":{k:?}}},"delay_s":1}}"#)),
        ],
    ) {
        let nodes: Vec<String> = nodes
            .iter()
            .map(|(n, extra)| format!(r#"{{"name":{n:?},"job":{{"command":["true"]}},"x":{extra:?}}}"#))
            .collect();
        let edges: Vec<String> = edges
            .iter()
            .map(|(a, b)| format!(r#"{{"from":{a:?},"to":{b:?}}}"#))
            .collect();
        let doc = format!(
            r#"{{"name":{name:?},"nodes":[{}],"data_edges":[{}],"triggers":[{trigger}]}}"#,
            nodes.join(","),
            edges.join(","),
        );
        checks::check_document(&doc);
    }

    #[test]
    fn event_filters(
        pattern in "[ab*/é]{0,12}",
        key in "[ab/é]{0,16}",
        query in r"[a-z_=&%*,0-9\-]{0,40}",
        body in JSONISH,
    ) {
        checks::check_event_filter(format!("{pattern}\n{key}\n{query}\n{body}\nns\nv\nT\n").as_bytes());
    }

    #[test]
    fn event_filters_with_edits(input in mutated(seeds("event_filter"))) {
        checks::check_event_filter(&input);
    }

    #[test]
    fn tag_uris(uri in r"[a-z?&=,%+0-9A-F/. é]{0,30}") {
        checks::check_tag_uri(uri.as_bytes());
    }

    #[test]
    fn tag_uris_any_text(uri in any::<String>()) {
        checks::check_tag_uri(uri.as_bytes());
    }

    #[test]
    fn cron_triggers(
        fields in proptest::collection::vec(r"(\*|[0-9]{1,3}|[A-Z]{3})([/,\-][0-9]{0,3})?", 0..8),
        tz in prop_oneof![
            Just("UTC"), Just("Europe/London"), Just("America/New_York"),
            Just("Australia/Lord_Howe"), Just("Mars/Olympus"), Just(""),
        ],
        catchup in prop_oneof![Just("none"), Just("latest"), Just("all"), Just("x")],
        last in prop_oneof![0i64..5_000_000_000, any::<i64>()],
        span in prop_oneof![0i64..7_200, 0i64..100_000_000, any::<i64>()],
        interval in prop_oneof![0u64..100_000, any::<u64>()],
    ) {
        let now = last.saturating_add(span);
        let input = format!("{}\n{tz}\n{catchup}\n{last}\n{now}\n{interval}\n", fields.join(" "));
        checks::check_trigger(input.as_bytes());
    }

    #[test]
    fn cron_triggers_with_edits(input in mutated(seeds("cron"))) {
        checks::check_trigger(&input);
    }
}
