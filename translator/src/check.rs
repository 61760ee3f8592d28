//! Checks shared by AI graphs and workflow documents.

use crate::graph::{Catchup, EventCondition, JobSpec, Pull, Resources, Trigger};
use crate::problem::Problems;
use crate::schedule::{DEFAULT_TIMEZONE, normalize_cron, parse_cron, parse_timezone};
use crate::workflow::WorkflowTrigger;

/// Longest name of a workflow, node or job.
pub const MAX_NAME_LEN: usize = 128;
/// Longest event key or namespace, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Longest duration any setting may give (`timeout_s`, `max_duration_s`, `interval_s`,
/// `delay_s`), in seconds: 366 days. Larger numbers are refused instead of overflowing a clock.
pub const MAX_DURATION_S: u64 = 366 * 86_400;
/// Largest `retry_backoff_s`: one day (the backoff doubles per attempt, up to 1024 times).
pub const MAX_RETRY_BACKOFF_S: u64 = 86_400;
/// Most `retries` of a job.
pub const MAX_RETRIES: u32 = 1_000;
/// Most `resources.cpus` of a job.
pub const MAX_CPUS: f64 = 4_096.0;
/// Most `resources.memory_mb` of a job: 16 TiB.
pub const MAX_MEMORY_MB: u64 = 16 * 1024 * 1024;
/// Most `resources.gpus` of a job.
pub const MAX_GPUS: u32 = 1_024;

/// A number of seconds over [`MAX_DURATION_S`] (or `max`) is a problem at `location`.
pub(crate) fn check_at_most(
    value: Option<u64>,
    max: u64,
    location: impl FnOnce() -> String,
    p: &mut Problems,
) {
    if let Some(v) = value
        && v > max
    {
        p.push(
            location(),
            format!("{v} is over the largest allowed value {max}"),
        );
    }
}

/// A job's `env_from`: plain variable names, each naming a secret by a plain name (letters,
/// digits, `.`, `_`, `-`, not starting with `.`, at most 128 bytes): a secret is a file of the
/// server's secrets folder, and its name never leads out of it.
pub(crate) fn check_env_from(
    env_from: &std::collections::BTreeMap<String, String>,
    loc: &str,
    p: &mut Problems,
) {
    for (k, v) in env_from {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            p.push(
                format!("{loc}.{k}"),
                format!("environment variable name {k:?} is invalid: use letters, digits and _"),
            );
        }
        let plain = !v.is_empty()
            && v.len() <= 128
            && !v.starts_with('.')
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            p.push(
                format!("{loc}.{k}"),
                format!(
                    "secret name {v:?} is invalid: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
                ),
            );
        }
    }
}

/// The numbers of a job's settings, each under its documented maximum.
pub(crate) fn check_job_numbers(
    timeout_s: Option<u64>,
    retries: Option<u32>,
    retry_backoff_s: Option<u64>,
    resources: Option<&Resources>,
    loc: &str,
    p: &mut Problems,
) {
    check_at_most(timeout_s, MAX_DURATION_S, || format!("{loc}.timeout_s"), p);
    check_at_most(
        retries.map(u64::from),
        u64::from(MAX_RETRIES),
        || format!("{loc}.retries"),
        p,
    );
    check_at_most(
        retry_backoff_s,
        MAX_RETRY_BACKOFF_S,
        || format!("{loc}.retry_backoff_s"),
        p,
    );
    let Some(r) = resources else { return };
    if let Some(cpus) = r.cpus
        && !(cpus.is_finite() && cpus > 0.0 && cpus <= MAX_CPUS)
    {
        p.push(
            format!("{loc}.resources.cpus"),
            format!("cpus must be a positive number up to {MAX_CPUS}, got {cpus}"),
        );
    }
    check_at_most(
        r.memory_mb,
        MAX_MEMORY_MB,
        || format!("{loc}.resources.memory_mb"),
        p,
    );
    check_at_most(
        r.gpus.map(u64::from),
        u64::from(MAX_GPUS),
        || format!("{loc}.resources.gpus"),
        p,
    );
}

/// Longest container image reference, in bytes.
pub const MAX_IMAGE_LEN: usize = 512;

/// A container image reference as a Docker Engine takes it: `[host[:port]/]path[:tag][@digest]`,
/// path components of lowercase letters, digits and `.`, `_`, `-` separators; a tag of at most
/// 128 letters, digits, `_`, `.`, `-`; a digest `algorithm:hex`. `None` when it is fine,
/// otherwise the reason.
#[must_use]
pub fn image_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("image is empty".into());
    }
    if image.len() > MAX_IMAGE_LEN {
        return Some(format!(
            "image is {} bytes long, at most {MAX_IMAGE_LEN} allowed",
            image.len()
        ));
    }
    if let Some(c) = image
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Some(format!("image {image:?} has the character {c:?}"));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Some(format!(
                "image {image:?} has a malformed digest; expected algorithm:hex after '@'"
            ));
        }
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Some(format!(
                "image {image:?} has an invalid tag {tag:?}: 1-128 letters, digits, '_', '.', '-'"
            ));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first component with '.', ':' or "localhost" is a registry host: its own rules.
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = host
            .split_once(':')
            .map_or((host, None), |(h, p)| (h, Some(p)));
        let host_ok = !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok {
            return Some(format!(
                "image {image:?} has an invalid registry host {host:?}"
            ));
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if !ok {
            return Some(format!(
                "image {image:?} has an invalid name component {part:?}: lowercase letters, digits and '.', '_', '-' between them"
            ));
        }
    }
    None
}

/// Most bind mounts one job may have.
pub const MAX_MOUNTS: usize = 64;
/// Longest bind mount, in bytes.
pub const MAX_MOUNT_LEN: usize = 4096;

/// One bind mount in Docker's short syntax, split: host path, container path, read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    pub host: &'a str,
    pub container: &'a str,
    pub read_only: bool,
}

/// Parses a bind mount `/host/path:/in/container[:ro|rw]`: absolute paths on both sides (no
/// `:` in them, no `..` component), the container path not `/`; the mode `ro` or `rw`
/// (default `rw`). Otherwise the reason.
pub fn parse_mount(mount: &str) -> Result<Mount<'_>, String> {
    if mount.is_empty() {
        return Err("mount is empty; expected /host/path:/in/container[:ro|rw]".into());
    }
    if mount.len() > MAX_MOUNT_LEN {
        return Err(format!(
            "mount is {} bytes long, at most {MAX_MOUNT_LEN} allowed",
            mount.len()
        ));
    }
    if let Some(c) = mount.chars().find(|c| c.is_control()) {
        return Err(format!("mount {mount:?} has the character {c:?}"));
    }
    let parts: Vec<&str> = mount.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        [_, _, mode] => {
            return Err(format!(
                "mount {mount:?} has the mode {mode:?}; only ro and rw are allowed"
            ));
        }
        _ => {
            return Err(format!(
                "mount {mount:?} is not /host/path:/in/container[:ro|rw] (a path cannot hold ':')"
            ));
        }
    };
    for (side, path) in [("host", host), ("container", container)] {
        if !path.starts_with('/') {
            return Err(format!(
                "mount {mount:?}: the {side} path {path:?} is not absolute"
            ));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(format!(
                "mount {mount:?}: the {side} path {path:?} has a '..' component"
            ));
        }
    }
    if container.trim_end_matches('/').is_empty() {
        return Err(format!("mount {mount:?}: the container path cannot be /"));
    }
    Ok(Mount {
        host,
        container,
        read_only,
    })
}

/// The `mounts` of one job or node: each well formed, at most [`MAX_MOUNTS`], no two on the
/// same container path.
pub(crate) fn check_mounts(mounts: &[String], loc: &str, p: &mut Problems) {
    if mounts.len() > MAX_MOUNTS {
        p.push(
            format!("{loc}.mounts"),
            format!("{} mounts, at most {MAX_MOUNTS} allowed", mounts.len()),
        );
        return;
    }
    let mut targets: Vec<&str> = Vec::with_capacity(mounts.len());
    for (j, m) in mounts.iter().enumerate() {
        match parse_mount(m) {
            Ok(m) => {
                let target = m.container.trim_end_matches('/');
                if targets.contains(&target) {
                    p.push(
                        format!("{loc}.mounts[{j}]"),
                        format!("a second mount on the container path {target:?}"),
                    );
                }
                targets.push(target);
            }
            Err(reason) => p.push(format!("{loc}.mounts[{j}]"), reason),
        }
    }
}

/// `image` and `pull` of one job or node.
pub(crate) fn check_image(image: Option<&str>, pull: Option<&Pull>, loc: &str, p: &mut Problems) {
    if let Some(reason) = image.and_then(image_problem) {
        p.push(format!("{loc}.image"), reason);
    }
    if let Some(pull) = pull
        && !pull.is_known()
    {
        p.push(
            format!("{loc}.pull"),
            format!(
                "unknown pull {:?}, expected one of {}",
                pull.as_str(),
                Pull::KNOWN.join(", ")
            ),
        );
    }
}

/// The fast path of [`check_name`]: `true` when the name is fine.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Names of workflows, nodes and jobs: 1–128 of `A-Z a-z 0-9 _ - .`, so they fit in URLs,
/// file names and NATS subjects as they are.
pub(crate) fn check_name(name: &str, what: &str, location: &str, p: &mut Problems) -> bool {
    let problem = if name.is_empty() {
        Some(format!("{what} is empty"))
    } else if name.len() > MAX_NAME_LEN {
        Some(format!(
            "{what} {name:?} is longer than {MAX_NAME_LEN} characters"
        ))
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map(|c| {
                format!(
                    "{what} {name:?} has the character {c:?}; use letters, digits, '_', '-' and '.'"
                )
            })
    };
    match problem {
        Some(m) => {
            p.push(location, m);
            false
        }
        None => true,
    }
}

/// Event keys and namespaces: 1–256 bytes of UTF-8 without control characters.
pub(crate) fn check_key(key: &str, what: &str, location: &str, p: &mut Problems) {
    if key.is_empty() {
        p.push(location, format!("{what} is empty"));
    } else if key.len() > MAX_KEY_LEN {
        p.push(
            location,
            format!(
                "{what} is {} bytes long, at most {MAX_KEY_LEN} allowed",
                key.len()
            ),
        );
    } else if key.chars().any(char::is_control) {
        p.push(
            location,
            format!("{what} {key:?} contains a control character"),
        );
    }
}

pub(crate) fn check_event_condition(ev: &EventCondition, location: &str, p: &mut Problems) {
    check_key(&ev.key, "event key", &format!("{location}.key"), p);
    if let Some(ns) = &ev.namespace {
        check_key(ns, "namespace", &format!("{location}.namespace"), p);
    }
    for (field, value) in [("event_type", &ev.event_type), ("sender", &ev.sender)] {
        if value.as_deref() == Some("") {
            p.push(
                format!("{location}.{field}"),
                format!("{field} is empty; leave it out to match any"),
            );
        }
    }
}

/// Executor settings that are wrong whatever job they end up in.
pub(crate) fn check_job_spec(spec: &JobSpec, loc: impl Fn() -> String, p: &mut Problems) {
    if let Some(name) = &spec.name {
        check_name(name, "job name", &format!("{}.name", loc()), p);
    }
    if spec.command.first().is_some_and(String::is_empty) {
        p.push(format!("{}.command[0]", loc()), "program name is empty");
    }
    if spec.timeout_s == Some(0) {
        p.push(
            format!("{}.timeout_s", loc()),
            "timeout must be at least 1 second",
        );
    }
    if spec.queue.as_deref() == Some("") {
        p.push(format!("{}.queue", loc()), "queue name is empty");
    }
    if let Some(q) = spec.queue.as_ref().filter(|q| !q.is_empty()) {
        check_name(q, "queue name", &format!("{}.queue", loc()), p);
    }
    if let Some(dir) = &spec.working_dir
        && dir.is_empty()
    {
        p.push(
            format!("{}.working_dir", loc()),
            "working directory is empty",
        );
    }
    for k in spec.env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            p.push(
                format!("{}.env", loc()),
                format!("environment variable name {k:?} is invalid"),
            );
        }
    }
    // The location is only spelled out for a setting that is there (one format per node
    // and setting adds up on graphs of 100,000 nodes).
    if spec.image.is_some() || spec.pull.is_some() {
        check_image(spec.image.as_deref(), spec.pull.as_ref(), &loc(), p);
    }
    if !spec.mounts.is_empty() {
        check_mounts(&spec.mounts, &loc(), p);
    }
    if !spec.env_from.is_empty() {
        check_env_from(&spec.env_from, &format!("{}.env_from", loc()), p);
    }
    if spec.timeout_s.is_some()
        || spec.retries.is_some()
        || spec.retry_backoff_s.is_some()
        || spec.resources.is_some()
    {
        check_job_numbers(
            spec.timeout_s,
            spec.retries,
            spec.retry_backoff_s,
            spec.resources.as_ref(),
            &loc(),
            p,
        );
    }
}

/// Checks a trigger and returns its parsed form when it is valid.
pub(crate) fn check_trigger(
    t: &Trigger,
    location: &str,
    p: &mut Problems,
) -> Option<WorkflowTrigger> {
    let kinds: Vec<&str> = [
        ("cron", t.cron.is_some()),
        ("interval_s", t.interval_s.is_some()),
        ("event", t.event.is_some()),
        ("all_of", t.all_of.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    match kinds.as_slice() {
        [] => {
            p.push(
                location,
                "trigger needs one of cron, interval_s, event or all_of",
            );
            return None;
        }
        [_] => {}
        many => {
            p.push(
                location,
                format!(
                    "trigger gives {}; give one, and combine with all_of",
                    many.join(" and ")
                ),
            );
            return None;
        }
    }
    if t.cron.is_none() {
        for (field, set) in [
            ("timezone", t.timezone.is_some()),
            ("catchup", t.catchup.is_some()),
        ] {
            if set {
                p.push(
                    format!("{location}.{field}"),
                    format!("{field} only applies to a cron trigger"),
                );
            }
        }
    }
    if t.event.is_none() && t.delay_s.is_some() {
        p.push(
            format!("{location}.delay_s"),
            "delay_s only applies to an event trigger",
        );
    }
    let before = p.len();
    check_at_most(
        t.delay_s,
        MAX_DURATION_S,
        || format!("{location}.delay_s"),
        p,
    );
    check_at_most(
        t.interval_s,
        MAX_DURATION_S,
        || format!("{location}.interval_s"),
        p,
    );
    if let Some(cron) = &t.cron {
        let timezone = t.timezone.as_deref().unwrap_or(DEFAULT_TIMEZONE);
        let catchup = t.catchup.clone().unwrap_or_default();
        return check_cron(cron, timezone, &catchup, location, p);
    }
    if let Some(interval_s) = t.interval_s {
        if interval_s == 0 {
            p.push(
                format!("{location}.interval_s"),
                "interval must be at least 1 second",
            );
            return None;
        }
        return (p.len() == before).then_some(WorkflowTrigger::Interval { interval_s });
    }
    if let Some(event) = &t.event {
        check_event_condition(event, &format!("{location}.event"), p);
        return (p.len() == before).then(|| WorkflowTrigger::Event {
            event: event.clone(),
            delay_s: t.delay_s.unwrap_or(0),
        });
    }
    let all_of = t.all_of.as_deref().unwrap_or_default();
    if all_of.is_empty() {
        p.push(
            format!("{location}.all_of"),
            "all_of needs at least one trigger",
        );
        return None;
    }
    let parts: Vec<Option<WorkflowTrigger>> = all_of
        .iter()
        .enumerate()
        .map(|(i, t)| check_trigger(t, &format!("{location}.all_of[{i}]"), p))
        .collect();
    parts
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .map(|all_of| WorkflowTrigger::AllOf { all_of })
}

/// Checks a cron trigger's fields and returns its parsed form.
pub(crate) fn check_cron(
    cron: &str,
    timezone: &str,
    catchup: &Catchup,
    location: &str,
    p: &mut Problems,
) -> Option<WorkflowTrigger> {
    let before = p.len();
    if let Err(e) = parse_cron(cron) {
        p.push(format!("{location}.cron"), e);
    }
    if let Err(e) = parse_timezone(timezone) {
        p.push(format!("{location}.timezone"), e);
    }
    if !catchup.is_known() {
        p.push(
            format!("{location}.catchup"),
            format!(
                "unknown catchup {:?}, expected one of {}",
                catchup.as_str(),
                Catchup::KNOWN.join(", ")
            ),
        );
    }
    (p.len() == before).then(|| WorkflowTrigger::Cron {
        cron: cron.to_string(),
        timezone: timezone.to_string(),
        catchup: catchup.clone(),
        schedule: normalize_cron(cron),
    })
}

/// Checks a parsed workflow trigger (from a workflow document).
pub(crate) fn check_workflow_trigger(t: &WorkflowTrigger, location: &str, p: &mut Problems) {
    match t {
        WorkflowTrigger::Cron {
            cron,
            timezone,
            catchup,
            ..
        } => {
            check_cron(cron, timezone, catchup, location, p);
        }
        WorkflowTrigger::Interval { interval_s } => {
            if *interval_s == 0 {
                p.push(
                    format!("{location}.interval_s"),
                    "interval must be at least 1 second",
                );
            }
            check_at_most(
                Some(*interval_s),
                MAX_DURATION_S,
                || format!("{location}.interval_s"),
                p,
            );
        }
        WorkflowTrigger::Event { event, delay_s } => {
            check_event_condition(event, &format!("{location}.event"), p);
            check_at_most(
                Some(*delay_s),
                MAX_DURATION_S,
                || format!("{location}.delay_s"),
                p,
            );
        }
        WorkflowTrigger::AllOf { all_of } => {
            if all_of.is_empty() {
                p.push(
                    format!("{location}.all_of"),
                    "all_of needs at least one trigger",
                );
            }
            for (i, t) in all_of.iter().enumerate() {
                check_workflow_trigger(t, &format!("{location}.all_of[{i}]"), p);
            }
        }
    }
}

/// Reports an unknown word of a closed set.
pub(crate) fn unknown_word(
    what: &str,
    word: &str,
    known: &[&str],
    location: String,
    p: &mut Problems,
) {
    p.push(
        location,
        format!(
            "unknown {what} {word:?}, expected one of {}",
            known.join(", ")
        ),
    );
}
