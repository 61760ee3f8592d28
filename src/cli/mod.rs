//! Command-line front ends of each part. Each submodule owns one command group.

use std::io::IsTerminal;
use std::process::ExitCode;

use serde::Serialize;

pub(crate) mod event;
pub(crate) mod examples;
pub(crate) mod graph;
pub(crate) mod meta;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod workflow;
pub(crate) mod yaml;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// What every command gets: where the server is and how to print.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) server: String,
    pub(crate) token: Option<String>,
    pub(crate) output: Output,
    /// Extra trusted CA certificates (PEM) for an HTTPS server.
    pub(crate) ca_cert: Option<std::path::PathBuf>,
}

/// Characters a terminal would act on instead of showing (escape sequences, carriage returns,
/// C1 controls such as CSI, bidirectional overrides) are written as `\uXXXX`: a value in an
/// event or a token's name cannot move the cursor, recolour or retitle the terminal, or hide
/// text. Newlines and tabs stay. In JSON output, `\uXXXX` is the same character.
pub(crate) fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes to stdout (through [`printable`]); a closed pipe (`aiflow … | head`) ends the
/// program quietly, as Unix tools do, instead of a panic.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let text = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_all(printable(&text).as_bytes())
        .and_then(|()| out.flush())
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_out(format_args!($($t)*)) };
}
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*))) };
}
pub(crate) use {out, outln};

impl Ctx {
    pub(crate) fn new(
        server: String,
        token: Option<String>,
        output: Option<Output>,
        ca_cert: Option<std::path::PathBuf>,
    ) -> Self {
        let output = output.unwrap_or(if std::io::stdout().is_terminal() {
            Output::Table
        } else {
            Output::Json
        });
        Self {
            server,
            // An empty AIFLOW_TOKEN (a job of a server without auth) is no token.
            token: token.filter(|t| !t.is_empty()),
            output,
            ca_cert: ca_cert.filter(|p| !p.as_os_str().is_empty()),
        }
    }

    /// An SDK client for `--server` and `--token`.
    #[allow(dead_code)]
    pub(crate) fn client(&self) -> aiflow_sdk::Client {
        let mut c = aiflow_sdk::Client::new(&self.server);
        if let Some(ca) = &self.ca_cert {
            c = c.with_ca_cert(ca);
        }
        match &self.token {
            Some(t) => c.with_token(t),
            None => c,
        }
    }

    /// Prints `value` as JSON or YAML, or as the table `table` renders.
    #[allow(dead_code)]
    pub(crate) fn print<T: Serialize>(&self, value: &T, table: impl FnOnce(&T) -> String) {
        match self.output {
            Output::Json => crate::cli::outln!(
                "{}",
                serde_json::to_string_pretty(value).expect("serialisable output")
            ),
            Output::Yaml => crate::cli::out!(
                "{}",
                yaml::to_string(&serde_json::to_value(value).expect("serialisable output"))
            ),
            Output::Table => crate::cli::out!("{}", table(value)),
        }
    }
}

/// A failed command: `Usage` exits 2, everything else 1.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad usage (exit code 2).
    #[allow(dead_code)]
    Usage(String),
    /// The operation failed (exit code 1); the lines after the first give details.
    Failed(String, Vec<String>),
    /// A documented outcome with an exit code of its own (`execution start --wait`).
    Exit(u8, String),
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        // One readable line: the error and its causes joined.
        let msg = e
            .chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        CliError::Failed(msg, Vec::new())
    }
}

impl From<aiflow_sdk::Error> for CliError {
    fn from(e: aiflow_sdk::Error) -> Self {
        CliError::Failed(e.to_string(), Vec::new())
    }
}

pub(crate) type CliResult = Result<(), CliError>;

/// Prints a failure on stderr and picks the exit code.
pub(crate) fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("error: {}", printable(&m));
            ExitCode::from(2)
        }
        Err(CliError::Exit(code, m)) => {
            eprintln!("error: {}", printable(&m));
            ExitCode::from(code)
        }
        Err(CliError::Failed(m, details)) => {
            eprintln!("error: {}", printable(&m));
            for d in details {
                eprintln!("  {}", printable(&d));
            }
            ExitCode::from(1)
        }
    }
}

/// A tokio runtime for commands that talk to the server.
#[allow(dead_code)]
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ttext\n"), "plain\ttext\n");
        assert!(matches!(
            printable("ünïcode ✓"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("\u{1b}]0;pwned\u{7}\u{1b}[2Jx\r\u{9b}31m"),
            "\\u001b]0;pwned\\u0007\\u001b[2Jx\\u000d\\u009b31m"
        );
        assert_eq!(printable("abc\u{202e}fdp.exe"), "abc\\u202efdp.exe");
        // In JSON the escape is the same character.
        let json = printable("\"a\u{202e}b\u{9b}\"");
        assert_eq!(
            serde_json::from_str::<String>(&json).unwrap(),
            "a\u{202e}b\u{9b}"
        );
    }
}
