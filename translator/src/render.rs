//! Drawings of an AI graph: Graphviz DOT text, or an SVG laid out here (layered, left to right),
//! so no external program is needed. Data edges are solid, control edges dashed and labelled
//! with their action; nodes of one job share a colour; event sources are ellipses.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::graph::{AiGraph, Condition};
use crate::workflow::Workflow;

/// One box (AI node) or ellipse (event source) of the drawing.
#[derive(Debug, Clone, PartialEq)]
struct Vertex {
    id: String,
    label: String,
    sublabel: String,
    is_event: bool,
    /// Job index for AI nodes (colour group).
    job: Option<usize>,
}

/// One arrow.
#[derive(Debug, Clone, PartialEq)]
struct Arrow {
    from: usize,
    to: usize,
    control: bool,
    label: String,
}

struct Drawing {
    vertices: Vec<Vertex>,
    arrows: Vec<Arrow>,
    job_names: Vec<String>,
}

const PALETTE: &[&str] = &[
    "#dbeafe", "#dcfce7", "#fef3c7", "#fce7f3", "#e0e7ff", "#ccfbf1", "#fee2e2", "#ede9fe",
];

fn drawing(graph: &AiGraph, workflow: &Workflow) -> Drawing {
    let job_of: HashMap<&str, usize> = workflow
        .jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| job.nodes.iter().map(move |n| (n.name.as_str(), j)))
        .collect();
    let mut vertices: Vec<Vertex> = graph
        .nodes
        .iter()
        .map(|n| Vertex {
            id: n.name.clone(),
            label: n.name.clone(),
            sublabel: n.op.to_string(),
            is_event: false,
            job: job_of.get(n.name.as_str()).copied(),
        })
        .collect();
    let index: HashMap<String, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let mut arrows: Vec<Arrow> = graph
        .data_edges
        .iter()
        .filter_map(|e| {
            Some(Arrow {
                from: *index.get(&e.from)?,
                to: *index.get(&e.to)?,
                control: false,
                label: String::new(),
            })
        })
        .collect();
    for edge in &graph.control_edges {
        let Some(&to) = index.get(&edge.to) else {
            continue;
        };
        let mut leaves = Vec::new();
        collect_leaves(&edge.condition, &mut leaves);
        for leaf in leaves {
            let (from, label) = match leaf {
                Leaf::Status(node, status) => match index.get(node) {
                    Some(&i) => (i, format!("{} on {status}", edge.action)),
                    None => continue,
                },
                Leaf::Event(key, ty) => {
                    let id = match ty {
                        Some(t) => format!("{key} [{t}]"),
                        None => key.to_string(),
                    };
                    let i = *events.entry(id.clone()).or_insert_with(|| {
                        vertices.push(Vertex {
                            id: format!("event:{id}"),
                            label: key.to_string(),
                            sublabel: ty.unwrap_or("event").to_string(),
                            is_event: true,
                            job: None,
                        });
                        vertices.len() - 1
                    });
                    (i, edge.action.to_string())
                }
            };
            arrows.push(Arrow {
                from,
                to,
                control: true,
                label,
            });
        }
    }
    Drawing {
        vertices,
        arrows,
        job_names: workflow.jobs.iter().map(|j| j.name.clone()).collect(),
    }
}

enum Leaf<'a> {
    Status(&'a str, String),
    Event(&'a str, Option<&'a str>),
}

fn collect_leaves<'a>(c: &'a Condition, out: &mut Vec<Leaf<'a>>) {
    match c {
        Condition::Event(e) => out.push(Leaf::Event(&e.key, e.event_type.as_deref())),
        Condition::JobStatus(s) => out.push(Leaf::Status(&s.node, s.status.to_string())),
        Condition::AllOf(parts) | Condition::AnyOf(parts) => {
            for p in parts {
                collect_leaves(p, out);
            }
        }
    }
}

/// Graphviz DOT text: one cluster per job.
#[must_use]
pub fn dot(graph: &AiGraph, workflow: &Workflow) -> String {
    let d = drawing(graph, workflow);
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", quote(&graph.name));
    s.push_str(
        "  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
    );
    for (j, name) in d.job_names.iter().enumerate() {
        let _ = writeln!(s, "  subgraph cluster_{j} {{");
        let _ = writeln!(s, "    label={};", quote(&format!("job {name}")));
        let _ = writeln!(s, "    style=dashed;");
        for v in d.vertices.iter().filter(|v| v.job == Some(j)) {
            let _ = writeln!(
                s,
                "    {} [label={}, fillcolor=\"{}\"];",
                quote(&v.id),
                quote(&format!("{}\\n({})", v.label, v.sublabel)),
                PALETTE[j % PALETTE.len()]
            );
        }
        s.push_str("  }\n");
    }
    for v in d.vertices.iter().filter(|v| v.is_event) {
        let _ = writeln!(
            s,
            "  {} [label={}, shape=ellipse, fillcolor=\"#fff7d6\"];",
            quote(&v.id),
            quote(&format!("{}\\n{}", v.label, v.sublabel))
        );
    }
    for a in &d.arrows {
        let (from, to) = (&d.vertices[a.from].id, &d.vertices[a.to].id);
        if a.control {
            let _ = writeln!(
                s,
                "  {} -> {} [style=dashed, label={}];",
                quote(from),
                quote(to),
                quote(&a.label)
            );
        } else {
            let _ = writeln!(s, "  {} -> {};", quote(from), quote(to));
        }
    }
    s.push_str("}\n");
    s
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Layer of each vertex: longest path from a source, over all arrows that do not close a cycle.
fn layers(n: usize, arrows: &[Arrow]) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for a in arrows.iter().filter(|a| a.from != a.to) {
        out[a.from].push(a.to);
        indegree[a.to] += 1;
    }
    let mut layer = vec![0usize; n];
    let mut done = vec![false; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
    let mut placed = 0;
    loop {
        while let Some(u) = ready.pop() {
            done[u] = true;
            placed += 1;
            for &v in &out[u] {
                if done[v] || indegree[v] == 0 {
                    continue; // an arrow back into a placed vertex, or one already ready
                }
                layer[v] = layer[v].max(layer[u] + 1);
                indegree[v] -= 1;
                if indegree[v] == 0 {
                    ready.push(v);
                }
            }
        }
        if placed == n {
            break;
        }
        // A cycle (e.g. a job restarted on its own status): break it at the first unplaced
        // vertex in declaration order.
        let u = (0..n).find(|&i| !done[i]).expect("an unplaced vertex");
        indegree[u] = 0;
        ready.push(u);
    }
    layer
}

const BOX_W: f64 = 170.0;
const BOX_H: f64 = 46.0;
const GAP_X: f64 = 90.0;
const GAP_Y: f64 = 34.0;
const MARGIN: f64 = 30.0;

/// An SVG drawing, laid out in layers from left to right.
#[must_use]
pub fn svg(graph: &AiGraph, workflow: &Workflow) -> String {
    let d = drawing(graph, workflow);
    let n = d.vertices.len();
    let layer = layers(n, &d.arrows);
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos = vec![(0.0, 0.0); n];
    for i in 0..n {
        let row = rows.entry(layer[i]).or_insert(0);
        pos[i] = (
            MARGIN + layer[i] as f64 * (BOX_W + GAP_X),
            MARGIN + 24.0 + *row as f64 * (BOX_H + GAP_Y),
        );
        *row += 1;
    }
    let width = MARGIN * 2.0 + (rows.len().max(1) as f64) * (BOX_W + GAP_X) - GAP_X;
    let height =
        MARGIN * 2.0 + 24.0 + rows.values().max().copied().unwrap_or(1) as f64 * (BOX_H + GAP_Y);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="13">"##
    );
    s.push_str(
        r##"  <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#334155"/></marker></defs>
"##,
    );
    let _ = writeln!(
        s,
        r##"  <text x="{MARGIN}" y="{}" font-size="15" font-weight="bold">{}</text>"##,
        MARGIN + 4.0,
        xml(&graph.name)
    );
    for a in &d.arrows {
        let (x1, y1) = (pos[a.from].0 + BOX_W, pos[a.from].1 + BOX_H / 2.0);
        let (x2, y2) = (pos[a.to].0, pos[a.to].1 + BOX_H / 2.0);
        let dash = if a.control {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let class = if a.control { "control" } else { "data" };
        let path = if x2 > x1 {
            let mx = (x1 + x2) / 2.0;
            format!("M {x1:.1} {y1:.1} C {mx:.1} {y1:.1}, {mx:.1} {y2:.1}, {x2:.1} {y2:.1}")
        } else {
            // Backward arrow: loop below the boxes.
            let low = y1.max(y2) + BOX_H;
            format!(
                "M {x1:.1} {y1:.1} C {:.1} {low:.1}, {:.1} {low:.1}, {x2:.1} {y2:.1}",
                x1 + 60.0,
                x2 - 60.0
            )
        };
        let _ = writeln!(
            s,
            r##"  <path class="edge {class}" d="{path}" fill="none" stroke="#334155" stroke-width="1.4"{dash} marker-end="url(#arrow)"/>"##
        );
        if !a.label.is_empty() {
            let (lx, ly) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0 - 6.0);
            let _ = writeln!(
                s,
                r##"  <text class="edge-label" x="{lx:.1}" y="{ly:.1}" text-anchor="middle" font-size="11" fill="#7c2d12">{}</text>"##,
                xml(&a.label)
            );
        }
    }
    for (i, v) in d.vertices.iter().enumerate() {
        let (x, y) = pos[i];
        let (cx, cy) = (x + BOX_W / 2.0, y + BOX_H / 2.0);
        if v.is_event {
            let _ = writeln!(
                s,
                r##"  <g class="event" data-id="{}"><ellipse cx="{cx:.1}" cy="{cy:.1}" rx="{:.1}" ry="{:.1}" fill="#fff7d6" stroke="#b45309"/>"##,
                xml(&v.id),
                BOX_W / 2.0,
                BOX_H / 2.0
            );
        } else {
            let fill = v.job.map_or("#f1f5f9", |j| PALETTE[j % PALETTE.len()]);
            let job = v.job.map(|j| d.job_names[j].as_str()).unwrap_or_default();
            let _ = writeln!(
                s,
                r##"  <g class="node" data-id="{}" data-job="{}"><title>job {}</title><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" stroke="#1e293b"/>"##,
                xml(&v.id),
                xml(job),
                xml(job)
            );
        }
        let _ = writeln!(
            s,
            r##"    <text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#475569">{}</text></g>"##,
            cy - 3.0,
            xml(&v.label),
            cy + 12.0,
            xml(&v.sublabel)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_edges_and_survive_cycles() {
        let arrow = |from, to| Arrow {
            from,
            to,
            control: false,
            label: String::new(),
        };
        assert_eq!(layers(3, &[arrow(0, 1), arrow(1, 2)]), vec![0, 1, 2]);
        assert_eq!(layers(3, &[arrow(0, 2), arrow(1, 2)]), vec![0, 0, 1]);
        // 0 -> 1 -> 0: broken at 0.
        let l = layers(2, &[arrow(0, 1), arrow(1, 0)]);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
