//! `aiflow token create|list|revoke`: API tokens, through the server (an admin's `--token`), or
//! straight in the store with `--data-dir`/`--database` (how the first admin token is made).

use std::path::PathBuf;
use std::time::Duration;

use aiflow_api::auth::{CreatedToken, NewToken, Role, TokenInfo};
use aiflow_meta::auth::Tokens;
use clap::{Args, Subcommand};
use reqwest::Method;

use super::meta::table;
use super::{CliError, CliResult, Ctx, runtime};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCmd {
    /// Create an API token and print it (the only time it is shown; only its hash is kept).
    #[command(
        after_help = "Examples:\n  aiflow token create --role admin --data-dir .aiflow     # the first admin token, no server needed\n  aiflow token create --role operator --name ci --expires 30d   # through the server, with an admin's --token"
    )]
    Create {
        /// What the token may do: viewer (read), operator (also run and publish), admin (also
        /// manage workflows and tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime: a number and s, m, h, d or w (`90m`, `30d`); default: no expiry.
        #[arg(long, value_parser = parse_lifetime)]
        expires: Option<Duration>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (never their secrets), newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token: it is refused from then on.
    Revoke {
        /// The token's id (the part after `afl_`, as `token list` shows).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where tokens are, when not through the server.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreArgs {
    /// Work on the server's data folder directly (its SQLite database) instead of through
    /// the API.
    #[arg(long, conflicts_with = "database")]
    data_dir: Option<PathBuf>,
    /// Work on this database directly (sqlite:PATH or postgres://…) instead of through the
    /// API.
    #[arg(long)]
    database: Option<String>,
}

impl StoreArgs {
    fn url(&self) -> Option<String> {
        match (&self.database, &self.data_dir) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(dir)) => {
                // The server makes its data folder too; the first token may come before it.
                let _ = crate::config::private_dir(dir);
                Some(format!("sqlite:{}", dir.join("aiflow.db").display()))
            }
            (None, None) => None,
        }
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// `30d`, `12h`, `90m`, `45s`, `2w`.
pub(crate) fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a lifetime such as 30d, 12h or 90m"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?} is not a lifetime such as 30d, 12h or 90m")),
    };
    if n == 0 {
        return Err("the lifetime must be more than 0".into());
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string(), Vec::new())
}

async fn open(url: &str) -> Result<Tokens, CliError> {
    let db = aiflow_db::Db::connect(&aiflow_db::DbConfig::new(url))
        .await
        .map_err(failed)?;
    Tokens::open(db).await.map_err(failed)
}

fn state(t: &TokenInfo) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
        "expired"
    } else {
        "active"
    }
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

fn tokens_table(list: &[TokenInfo]) -> String {
    table(
        &["ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES"],
        list.iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.role.to_string(),
                    state(t).into(),
                    when(Some(t.created_at)),
                    when(t.expires_at),
                ]
            })
            .collect(),
    )
}

pub(crate) fn run(cmd: TokenCmd, ctx: &Ctx) -> CliResult {
    let client = ctx.client();
    runtime().block_on(async {
        match cmd {
            TokenCmd::Create {
                role,
                name,
                expires,
                store,
            } => {
                let created: CreatedToken = match store.url() {
                    Some(url) => open(&url)
                        .await?
                        .create(role, name.as_deref(), expires)
                        .await
                        .map_err(failed)?,
                    None => {
                        client
                            .post(
                                "/tokens",
                                &NewToken {
                                    role,
                                    name,
                                    expires_in_s: expires.map(|d| d.as_secs()),
                                },
                            )
                            .await?
                    }
                };
                ctx.print(&created, |c| {
                    eprintln!(
                        "created {} token {} ({}); it is shown once, keep it now:",
                        c.info.role, c.info.id, c.info.name
                    );
                    format!("{}\n", c.token)
                });
            }
            TokenCmd::List { store } => {
                let list: Vec<TokenInfo> = match store.url() {
                    Some(url) => open(&url).await?.list().await.map_err(failed)?,
                    None => client.get("/tokens", &()).await?,
                };
                ctx.print(&list, |l| tokens_table(l));
            }
            TokenCmd::Revoke { id, store } => {
                let info: TokenInfo = match store.url() {
                    Some(url) => open(&url).await?.revoke(&id).await.map_err(failed)?,
                    None => {
                        let path = format!("/tokens/{}", aiflow_sdk::client::segment(&id));
                        client.send(client.request(Method::DELETE, &path)).await?
                    }
                };
                ctx.print(&info, |t| format!("token {} revoked\n", t.id));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_lifetime("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_lifetime("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_lifetime("soon").is_err());
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("3y").is_err());
    }
}
