//! A job's environment is built, never inherited from the process that starts it (the
//! server, or a worker). It holds, in this order, each later part overriding the earlier:
//!
//! 1. the base: [`BASE`] (`PATH`, `HOME`, `LANG`, `TZ`, `TMPDIR`, `USER`), copied from the
//!    starting process when it has them;
//! 2. the variables the operator names in `job_env_passthrough` (exact names or patterns with
//!    `*`, say `LC_*` or `CUDA_VISIBLE_DEVICES`), copied the same way;
//! 3. the job's own `env`, its `env_from` secrets, and the `AIFLOW_*` job variables (the
//!    caller's map).
//!
//! The starting process's `AIFLOW_*` variables (its database URL, NATS address, token) are
//! never copied, whatever the passthrough says: a job's `AIFLOW_*` variables are the ones the
//! scheduler sets for it. See docs/security.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Variables every job gets from the starting process (when it has them).
pub const BASE: [&str; 6] = ["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"];

/// `PATH` of a job whose starting process has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `true` when the starting process's variable `name` may never reach a job.
fn never_copied(name: &str) -> bool {
    name.starts_with("AIFLOW_")
}

/// `true` when `name` matches `pattern`: an exact name, or one with `*` standing for any run of
/// characters (`LC_*`, `*_PROXY`, `*`).
#[must_use]
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Checks one `job_env_passthrough` pattern: a variable name (letters, digits, `_`) with
/// optional `*`s. The error says why not.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a job_env_passthrough pattern is empty".into());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '*'))
    {
        return Err(format!(
            "job_env_passthrough pattern {pattern:?} has {c:?}: use letters, digits, _ and *"
        ));
    }
    Ok(())
}

/// The environment of a job: the base and the passthrough variables from `parent` (the
/// starting process's environment), then `job` (the job's `env` and `AIFLOW_*` variables).
#[must_use]
pub fn build<I, K, V>(
    parent: I,
    passthrough: &[String],
    job: &BTreeMap<String, String>,
) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let mut env = BTreeMap::new();
    for (k, v) in parent {
        let k = k.into();
        if never_copied(&k) {
            continue;
        }
        if BASE.contains(&k.as_str()) || passthrough.iter().any(|p| matches(p, &k)) {
            env.insert(k, v.into());
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env.extend(job.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// The environment of the process starting jobs, for [`build`] (variables that are not valid
/// Unicode are left out).
pub fn current() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Where the server's named secrets live: `<data_dir>/secrets/<name>`, one file each.
#[must_use]
pub fn secrets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

/// Reads the variables a job's `env_from` names: `variable → secret name`. A secret is the
/// file `<secrets_dir>/<name>`, its content the value (one trailing newline dropped). The error
/// names the variable and the secret, never a value.
pub fn resolve_secrets(
    secrets_dir: &Path,
    env_from: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (var, name) in env_from {
        if !valid_secret_name(name) {
            return Err(format!(
                "env_from {var}: secret name {name:?} is not a plain name (letters, digits, '.', '_', '-')"
            ));
        }
        let path = secrets_dir.join(name);
        let value = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "env_from {var}: cannot read secret {name:?} ({}): {e}",
                path.display()
            )
        })?;
        let value = value
            .strip_suffix('\n')
            .map(|v| v.strip_suffix('\r').unwrap_or(v))
            .unwrap_or(&value);
        out.insert(var.clone(), value.to_string());
    }
    Ok(out)
}

/// A secret's name: letters, digits, `.`, `_`, `-`, not starting with `.`, at most 128 bytes.
#[must_use]
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Vec<(String, String)> {
        [
            ("PATH", "/opt/bin:/usr/bin"),
            ("HOME", "/home/me"),
            ("LANG", "C.UTF-8"),
            ("USER", "me"),
            ("AIFLOW_DATABASE", "postgres://u:secret@db/aiflow"),
            ("AIFLOW_NATS", "nats://user:pw@nats:4222"),
            ("AIFLOW_TOKEN", "afl_abc_def"),
            ("AWS_SECRET_ACCESS_KEY", "cloud-secret"),
            ("LC_TIME", "de_DE.UTF-8"),
            ("CUDA_VISIBLE_DEVICES", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn only_the_base_passes_without_a_passthrough() {
        let job = BTreeMap::from([("AIFLOW_JOB".to_string(), "train".to_string())]);
        let env = build(parent(), &[], &job);
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(names, ["AIFLOW_JOB", "HOME", "LANG", "PATH", "USER"]);
        assert_eq!(env["PATH"], "/opt/bin:/usr/bin");
    }

    #[test]
    fn the_passthrough_adds_names_and_patterns_but_never_the_servers_aiflow_variables() {
        let pass = vec!["LC_*".to_string(), "CUDA_VISIBLE_DEVICES".to_string()];
        let env = build(parent(), &pass, &BTreeMap::new());
        assert_eq!(env["LC_TIME"], "de_DE.UTF-8");
        assert_eq!(env["CUDA_VISIBLE_DEVICES"], "0");
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
        // Even a passthrough of everything keeps the server's own variables out.
        let env = build(parent(), &["*".to_string()], &BTreeMap::new());
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "cloud-secret");
        for k in ["AIFLOW_DATABASE", "AIFLOW_NATS", "AIFLOW_TOKEN"] {
            assert!(!env.contains_key(k), "{k} reached the job");
        }
    }

    #[test]
    fn the_jobs_own_variables_win_and_path_has_a_default() {
        let job = BTreeMap::from([
            ("PATH".to_string(), "/job/bin".to_string()),
            ("AIFLOW_TOKEN".to_string(), "afj_job".to_string()),
        ]);
        let env = build(parent(), &[], &job);
        assert_eq!(env["PATH"], "/job/bin");
        assert_eq!(env["AIFLOW_TOKEN"], "afj_job");
        let env = build(Vec::<(String, String)>::new(), &[], &BTreeMap::new());
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env.len(), 1);
    }

    #[test]
    fn patterns() {
        assert!(matches("LC_*", "LC_ALL"));
        assert!(matches("LC_*", "LC_"));
        assert!(!matches("LC_*", "XLC_ALL"));
        assert!(matches("*_PROXY", "HTTPS_PROXY"));
        assert!(matches("A*B*C", "AxxBxxC"));
        assert!(!matches("A*B*C", "AxxCxxB"));
        assert!(!matches("AB*BA", "ABA"));
        assert!(matches("*", "ANY"));
        assert!(matches("HOME", "HOME"));
        assert!(!matches("HOME", "HOMEX"));
        assert!(check_pattern("LC_*").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("A=B").unwrap_err().contains("'='"));
    }

    #[test]
    fn secrets_are_read_from_their_folder_by_plain_name() {
        let dir = std::env::temp_dir().join(format!("aiflow-jobenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("db-password"), "s3cret\n").unwrap();
        let env_from = BTreeMap::from([("DB_PASSWORD".to_string(), "db-password".to_string())]);
        let got = resolve_secrets(&dir, &env_from).unwrap();
        assert_eq!(got["DB_PASSWORD"], "s3cret");
        let missing = BTreeMap::from([("X".to_string(), "nope".to_string())]);
        let e = resolve_secrets(&dir, &missing).unwrap_err();
        assert!(e.contains("env_from X") && e.contains("\"nope\""), "{e}");
        let escape = BTreeMap::from([("X".to_string(), "../db-password".to_string())]);
        assert!(resolve_secrets(&dir, &escape).is_err());
        assert!(!valid_secret_name(".hidden"));
        assert!(!valid_secret_name("a/b"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
