//! Validation + translation time for generated graphs of 1k, 10k and 100k nodes, about two
//! edges a node: components of 10 nodes joined by data edges (i-1 → i and i-2 → i), and one
//! control edge per component on the previous component's status.
//!
//! `cargo bench -p aiflow-translator --bench translate`

use std::hint::black_box;
use std::time::Duration;

use aiflow_translator::{
    Action, AiGraph, AiNode, Condition, ControlEdge, DataEdge, JobSpec, Life, StatusCondition,
    translate,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const COMPONENT: usize = 10;

fn generate(n: usize) -> AiGraph {
    let name = |i: usize| format!("node_{i}");
    let nodes = (0..n)
        .map(|i| AiNode {
            name: name(i),
            job: JobSpec {
                command: if i % COMPONENT == 0 {
                    vec!["python3".into(), format!("step_{i}.py")]
                } else {
                    Vec::new()
                },
                ..JobSpec::default()
            },
            ..AiNode::default()
        })
        .collect();
    let mut data_edges = Vec::with_capacity(2 * n);
    let mut control_edges = Vec::new();
    for i in 0..n {
        let k = i % COMPONENT;
        if k >= 1 {
            data_edges.push(DataEdge {
                from: name(i - 1),
                to: name(i),
            });
        }
        if k >= 2 {
            data_edges.push(DataEdge {
                from: name(i - 2),
                to: name(i),
            });
        }
        if k == 0 && i >= COMPONENT {
            control_edges.push(ControlEdge {
                to: name(i),
                action: Action::Start,
                life: Life::Repeated,
                condition: Condition::job_status(name(i - COMPONENT), StatusCondition::Succeeded),
            });
        }
    }
    AiGraph {
        name: format!("generated_{n}"),
        namespace: "default".into(),
        nodes,
        data_edges,
        control_edges,
        ..AiGraph::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_and_translate");
    for n in [1_000usize, 10_000, 100_000] {
        let graph = generate(n);
        assert!(translate(&graph).is_ok());
        group.throughput(Throughput::Elements(n as u64));
        if n >= 100_000 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(10));
        } else {
            group
                .sample_size(30)
                .measurement_time(Duration::from_secs(5));
        }
        group.bench_with_input(BenchmarkId::from_parameter(n), &graph, |b, g| {
            b.iter(|| translate(black_box(g)).expect("valid"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
