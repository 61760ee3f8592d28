//! `aiflow event send | list | watch`: events from the shell.

use aiflow_api::event::EventQuery;
use aiflow_api::{Event, EventFilter, NewEvent, Offset};
use aiflow_sdk::Listener;
use clap::{Args, Subcommand};

use super::{CliError, CliResult, Ctx, Output, runtime};

#[derive(Debug, Subcommand)]
pub(crate) enum EventCmd {
    /// Publish one event; prints it as stored (with its offset).
    #[command(
        after_help = "Examples:\n  aiflow event send --key dataset/raw/2026-11-25 --type DATASET_UPDATED\n  aiflow event send --key model/fraud --value v7 --type MODEL_VERSION_CREATED --context '{\"execution\":\"42\"}'"
    )]
    Send(SendArgs),
    /// List stored events, oldest first.
    #[command(
        after_help = "Examples:\n  aiflow event list --key 'dataset/*' --limit 20\n  aiflow event list --after 1200 --type JOB_STATUS"
    )]
    List(ListArgs),
    /// Follow events as they come (replays from --from first) until Ctrl-C.
    #[command(
        after_help = "Examples:\n  aiflow event watch --key 'model/*'\n  aiflow event watch --from 1 --output json"
    )]
    Watch(WatchArgs),
    /// What one event did: executions it started, rules it matched and the jobs they started
    /// or stopped (from the recorded rule evaluations).
    #[command(
        after_help = "Examples:\n  aiflow event trace 1234\n  aiflow event trace 1234 --output json"
    )]
    Trace(TraceArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    /// The event's offset.
    offset: i64,
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Event key, e.g. `model/fraud`.
    #[arg(long)]
    key: String,
    #[arg(long, default_value = "")]
    value: String,
    /// Event type (default UNDEFINED).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Namespace (default `default`).
    #[arg(long)]
    namespace: Option<String>,
    #[arg(long)]
    sender: Option<String>,
    /// Context as JSON, e.g. `{"execution":"42"}`.
    #[arg(long)]
    context: Option<String>,
    /// Publish at most once under this key.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct FilterArgs {
    #[arg(long)]
    namespace: Option<String>,
    /// Key pattern; `*` matches any run of characters.
    #[arg(long)]
    key: Option<String>,
    /// Event type (repeatable, or comma-separated).
    #[arg(long = "type", value_delimiter = ',')]
    event_types: Vec<String>,
    #[arg(long)]
    sender: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> EventFilter {
        EventFilter {
            namespace: self.namespace.clone(),
            key: self.key.clone(),
            event_types: self.event_types.clone(),
            sender: self.sender.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only events with a larger offset (the cursor of event lists: the last offset seen).
    #[arg(long, visible_alias = "cursor", default_value_t = 0)]
    after: i64,
    /// At most this many events (1..=1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Start at this offset, inclusive (1: everything stored). Default: only new events.
    #[arg(long)]
    from: Option<i64>,
}

pub(crate) fn run(cmd: EventCmd, ctx: &Ctx) -> CliResult {
    match cmd {
        EventCmd::Send(args) => send(args, ctx),
        EventCmd::List(args) => list(args, ctx),
        EventCmd::Watch(args) => watch(args, ctx),
        EventCmd::Trace(args) => trace(args, ctx),
    }
}

fn trace(args: TraceArgs, ctx: &Ctx) -> CliResult {
    if args.offset < 1 {
        return Err(CliError::Usage("OFFSET must be a positive number".into()));
    }
    let client = ctx.client();
    let (event, trace) = runtime().block_on(async {
        let query = EventQuery {
            after: Some(args.offset - 1),
            limit: Some(1),
            ..EventQuery::default()
        };
        let page = client.events().list(&query).await?;
        let event = page
            .items
            .into_iter()
            .find(|e| e.offset.0 == args.offset)
            .ok_or_else(|| {
                CliError::Failed(format!("event {} is not stored", args.offset), Vec::new())
            })?;
        let trace = client.events().trace(Offset(args.offset)).await?;
        Ok::<_, CliError>((event, trace))
    })?;
    let out = serde_json::json!({
        "event": event,
        "started_executions": trace.started_executions,
        "evaluations": trace.evaluations,
    });
    ctx.print(&out, |_| trace_table(&event, &trace));
    Ok(())
}

fn trace_table(event: &Event, trace: &aiflow_api::scheduler::EventTrace) -> String {
    let mut out = table(std::slice::from_ref(event));
    if let Some(tp) = event
        .context
        .as_ref()
        .and_then(|c| c.get("traceparent"))
        .and_then(|v| v.as_str())
    {
        out.push_str(&format!("traceparent {tp}\n"));
    }
    let attempt_text =
        |a: &aiflow_api::scheduler::TracedAttempt| format!("{} #{} {}", a.job, a.attempt, a.state);
    out.push_str("\nStarted executions (workflow triggers):\n");
    if trace.started_executions.is_empty() {
        out.push_str("  none\n");
    }
    for e in &trace.started_executions {
        let jobs: Vec<String> = e.jobs.iter().map(attempt_text).collect();
        out.push_str(&format!(
            "  {:<32} {:<24} {:<10} {}\n",
            e.execution,
            e.workflow,
            e.state,
            jobs.join(", ")
        ));
    }
    out.push_str("\nRule evaluations:\n");
    if trace.evaluations.is_empty() {
        out.push_str("  none (no running execution has a rule on this event)\n");
    } else {
        out.push_str(&format!(
            "  {:<32} {:<20} {:<16} {:<5} {:<28} {}\n",
            "EXECUTION", "WORKFLOW", "JOB", "RULE", "DECISION", "ATTEMPT"
        ));
    }
    for ev in &trace.evaluations {
        out.push_str(&format!(
            "  {:<32} {:<20} {:<16} {:<5} {:<28} {}\n",
            ev.execution,
            ev.workflow,
            ev.job,
            ev.rule,
            ev.decision,
            ev.attempt.as_ref().map_or("-".to_string(), attempt_text)
        ));
    }
    out
}

fn send(args: SendArgs, ctx: &Ctx) -> CliResult {
    let context = args
        .context
        .as_deref()
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(c)
                .map_err(|e| CliError::Usage(format!("--context is not JSON: {e}")))
        })
        .transpose()?;
    // Run inside a job, the event names the job's execution unless --context names one.
    let event = aiflow_sdk::publisher::with_job_execution(NewEvent {
        namespace: args.namespace,
        key: args.key,
        value: args.value,
        event_type: args.event_type,
        sender: args.sender,
        context,
        idempotency_key: args.idempotency_key,
    });
    let client = ctx.client();
    let stored = runtime().block_on(async { client.events().publish(&event).await })?;
    ctx.print(&stored, |e| table(std::slice::from_ref(e)));
    Ok(())
}

fn list(args: ListArgs, ctx: &Ctx) -> CliResult {
    if args.after < 0 {
        return Err(CliError::Usage("--after must not be negative".into()));
    }
    let mut query = EventQuery::from_filter(&args.filter.filter());
    query.after = Some(args.after);
    query.limit = Some(args.limit);
    let client = ctx.client();
    let page = runtime().block_on(async { client.events().list(&query).await })?;
    ctx.print(&page, |p| {
        let mut out = table(&p.items);
        if let Some(c) = &p.next_cursor {
            out.push_str(&format!("(more: --after {c})\n"));
        }
        out
    });
    Ok(())
}

fn watch(args: WatchArgs, ctx: &Ctx) -> CliResult {
    if args.from.is_some_and(|f| f < 0) {
        return Err(CliError::Usage("--from must not be negative".into()));
    }
    let mut listener = Listener::new(ctx.client(), args.filter.filter());
    if let Some(from) = args.from {
        listener = listener.from(Offset(from));
    }
    let output = ctx.output;
    runtime().block_on(async move {
        if output == Output::Table {
            crate::cli::outln!("{}", row(&HEADERS.map(String::from)));
        }
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                next = listener.next() => match next? {
                    Some(e) => match output {
                        // One JSON document per line, so `jq` can follow along.
                        Output::Json => crate::cli::outln!("{}", serde_json::to_string(&e).expect("serialisable event")),
                        // One YAML document per event.
                        Output::Yaml => crate::cli::out!("---\n{}", crate::cli::yaml::to_string(&serde_json::to_value(&e).expect("serialisable event"))),
                        Output::Table => crate::cli::outln!("{}", row(&cells(&e))),
                    },
                    None => return Ok(()),
                },
            }
        }
    })
}

const HEADERS: [&str; 7] = [
    "OFFSET",
    "CREATED",
    "NAMESPACE",
    "KEY",
    "TYPE",
    "SENDER",
    "VALUE",
];
const WIDTHS: [usize; 7] = [8, 24, 10, 28, 24, 12, 0];

fn cells(e: &Event) -> [String; 7] {
    let mut value = e.value.replace('\n', "\\n");
    if value.chars().count() > 60 {
        value = value.chars().take(57).collect::<String>() + "...";
    }
    [
        e.offset.to_string(),
        e.created_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        e.namespace.clone(),
        e.key.clone(),
        e.event_type.clone(),
        e.sender.clone().unwrap_or_else(|| "-".into()),
        value,
    ]
}

fn row(cells: &[String; 7]) -> String {
    let mut out = String::new();
    for (c, w) in cells.iter().zip(WIDTHS) {
        if w == 0 {
            out.push_str(c);
        } else {
            out.push_str(&format!("{c:<w$} "));
        }
    }
    out.trim_end().to_string()
}

fn table(events: &[Event]) -> String {
    let mut out = row(&HEADERS.map(String::from));
    out.push('\n');
    for e in events {
        out.push_str(&row(&cells(e)));
        out.push('\n');
    }
    out
}
