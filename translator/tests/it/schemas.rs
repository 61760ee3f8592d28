//! The JSON Schemas in docs/schemas are generated from the types; this test fails (and rewrites
//! them) when they are stale.

use aiflow_translator::schemas;

/// The value with every object's keys in sorted order, whatever serde_json's `preserve_order`
/// feature (which other crates of the workspace turn on) says.
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

fn check(file: &str, schema: serde_json::Value) -> bool {
    let path = format!("{}/../docs/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = serde_json::to_string_pretty(&sorted(&schema)).unwrap() + "\n";
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current == text {
        return true;
    }
    std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    eprintln!("docs/schemas/{file} was stale and has been regenerated; commit it");
    false
}

#[test]
fn schemas_in_docs_are_current() {
    let graph_ok = check("ai-graph.schema.json", schemas::ai_graph());
    let workflow_ok = check("workflow.schema.json", schemas::workflow());
    assert!(
        graph_ok && workflow_ok,
        "schemas were stale (now regenerated)"
    );
}

#[test]
fn schema_lists_the_closed_words() {
    let s = schemas::ai_graph().to_string();
    for word in [
        "START",
        "RESTART",
        "ONCE",
        "REPEATED",
        "SUCCEEDED",
        "read_dataset",
    ] {
        assert!(s.contains(word), "{word} missing from the schema");
    }
}
