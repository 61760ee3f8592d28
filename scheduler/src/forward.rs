//! Scheduler requests made on a standby replica go to the leader over NATS request/reply:
//! `aiflow.scheduler.start`, `aiflow.scheduler.stop` (answered by the leader only) and
//! `aiflow.scheduler.reload` (a notice). While no replica leads (a takeover, a cluster just
//! started), a request waits for a leader up to [`TIMEOUT`]; without NATS, or when none appears
//! in time, it fails with 503 and a reason.

use std::time::Duration;

use aiflow_api::ApiError;
use aiflow_api::server::HttpError;
use async_nats::client::RequestErrorKind;
use axum::http::StatusCode;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Error;
use crate::command::Command;
use crate::remote::{Fabric, stopped};

const START: &str = "scheduler.start";
const STOP: &str = "scheduler.stop";
const RELOAD: &str = "scheduler.reload";
/// How long a standby waits for the leader's answer, including the wait for a leader to be
/// elected (a hung leader loses the lease after [`crate::leader::IDLE_TIMEOUT`]).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often a standby asks again while no replica leads.
const NO_LEADER_RETRY: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct StartRequest {
    workflow: String,
    trigger: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct StopRequest {
    execution: String,
}

/// The leader's answer: `ok`, or the HTTP error it would have given.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer<T> {
    Ok(T),
    Error { status: u16, error: ApiError },
}

fn answer<T>(r: Result<T, Error>) -> Answer<T> {
    match r {
        Ok(v) => Answer::Ok(v),
        Err(e) => {
            let h = HttpError::from(e);
            Answer::Error {
                status: h.status.as_u16(),
                error: h.error,
            }
        }
    }
}

fn no_leader(why: impl std::fmt::Display) -> Error {
    Error::Forwarded {
        status: StatusCode::SERVICE_UNAVAILABLE.as_u16(),
        error: ApiError::new(
            "unavailable",
            format!(
                "this replica is a standby and no scheduling leader answered ({why}); retry shortly"
            ),
        ),
    }
}

async fn request<Q: Serialize, T: serde::de::DeserializeOwned>(
    fabric: Option<Fabric>,
    subject: &'static str,
    body: &Q,
) -> Result<T, Error> {
    let Some(fabric) = fabric else {
        return Err(no_leader("no NATS to reach it"));
    };
    let payload = serde_json::to_vec(body).expect("request serialises");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut waited = false;
    let reply = loop {
        let request = fabric
            .client
            .request(fabric.subject(subject), payload.clone().into());
        match tokio::time::timeout_at(deadline, request).await {
            Err(_) => return Err(no_leader("timed out")),
            Ok(Ok(reply)) => break reply,
            // Nobody received it, so asking again cannot run it twice. Between two leaders (a
            // takeover, or every replica just started) one takes the lease within seconds:
            // wait for it rather than refuse the request.
            Ok(Err(e))
                if e.kind() == RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() + NO_LEADER_RETRY < deadline =>
            {
                if !waited {
                    tracing::info!(subject, "no scheduling leader yet; waiting for one");
                    waited = true;
                }
                tokio::time::sleep(NO_LEADER_RETRY).await;
            }
            Ok(Err(e)) => return Err(no_leader(e)),
        }
    };
    match serde_json::from_slice::<Answer<T>>(&reply.payload) {
        Ok(Answer::Ok(v)) => Ok(v),
        Ok(Answer::Error { status, error }) => Err(Error::Forwarded { status, error }),
        Err(e) => Err(no_leader(format!("unreadable answer: {e}"))),
    }
}

/// On a standby: sends one scheduler request on to the leader (in the background).
pub(crate) fn send(fabric: Option<Fabric>, cmd: Command) {
    match cmd {
        Command::Start {
            workflow,
            trigger,
            reply,
            ..
        } => {
            tokio::spawn(async move {
                let r = request(fabric, START, &StartRequest { workflow, trigger }).await;
                let _ = reply.send(r);
            });
        }
        Command::Stop { execution, reply } => {
            tokio::spawn(async move {
                let r = request(fabric, STOP, &StopRequest { execution }).await;
                let _ = reply.send(r);
            });
        }
        Command::Reload => {
            if let Some(f) = fabric {
                tokio::spawn(async move {
                    let _ = f.client.publish(f.subject(RELOAD), Vec::new().into()).await;
                });
            }
        }
        _ => {}
    }
}

/// On the leader: answers standbys' requests by feeding them to the loop.
pub(crate) async fn serve(
    fabric: &Fabric,
    tx: mpsc::Sender<Command>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let client = fabric.client.clone();
    let subscribe = |s: &'static str| {
        let (c, subject) = (client.clone(), fabric.subject(s));
        async move {
            c.subscribe(subject)
                .await
                .map_err(|e| Error::Nats(format!("nats subscribe {s}: {e}")))
        }
    };
    let mut starts = subscribe(START).await?;
    let mut stops = subscribe(STOP).await?;
    let mut reloads = subscribe(RELOAD).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = starts.next() => {
                    let (client, tx) = (client.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = match serde_json::from_slice::<StartRequest>(&m.payload) {
                            Ok(req) => {
                                let (reply, rx) = oneshot::channel();
                                let cmd = Command::Start { workflow: req.workflow, trigger: req.trigger, event: None, reply };
                                if tx.send(cmd).await.is_err() { Err(Error::Stopped) } else { rx.await.unwrap_or(Err(Error::Stopped)) }
                            }
                            Err(source) => Err(Error::Unreadable {
                                what: "a forwarded request".into(),
                                source,
                            }),
                        };
                        respond(&client, m.reply, &answer(r)).await;
                    });
                }
                Some(m) = stops.next() => {
                    let (client, tx) = (client.clone(), tx.clone());
                    tokio::spawn(async move {
                        let r = match serde_json::from_slice::<StopRequest>(&m.payload) {
                            Ok(req) => {
                                let (reply, rx) = oneshot::channel();
                                if tx.send(Command::Stop { execution: req.execution, reply }).await.is_err() { Err(Error::Stopped) } else { rx.await.unwrap_or(Err(Error::Stopped)) }
                            }
                            Err(source) => Err(Error::Unreadable {
                                what: "a forwarded request".into(),
                                source,
                            }),
                        };
                        respond(&client, m.reply, &answer(r)).await;
                    });
                }
                Some(_) = reloads.next() => {
                    let _ = tx.send(Command::Reload).await;
                }
                () = stopped(&mut shutdown) => break,
                else => break,
            }
        }
    });
    Ok(())
}

async fn respond<T: Serialize>(
    client: &async_nats::Client,
    to: Option<async_nats::Subject>,
    body: &T,
) {
    if let Some(to) = to {
        let body = serde_json::to_vec(body).expect("answer serialises");
        let _ = client.publish(to, body.into()).await;
    }
}
