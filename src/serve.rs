//! The HTTP server loop: axum's router over hyper connections, with the timeouts that keep slow
//! or idle clients from holding connections (docs/security.md): a request's header must
//! arrive within `header_timeout` of the connection waiting for it, which also closes a
//! keep-alive connection idle that long, and a request body may not pause longer than that
//! between two chunks. HTTP/2 connections (prior knowledge only) are pinged and closed when the
//! peer stops answering.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

/// Serves `app` on `listener` (plain TCP, or TLS over it) until `stop` turns true, then lets open requests finish.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: Listener,
{
    // Every connection task holds a receiver; the loop waits for them all at the end.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        // The listener waits out accept errors (out of file descriptors, say) itself.
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        // A request body must keep coming: a client that stops sending it for
        // `header_timeout` gets an error answer and loses the connection.
        let service =
            TowerToHyperService::new(app.clone().map_request(move |req: Request<Incoming>| {
                req.map(|body| axum::body::Body::new(TimeoutBody::new(header_timeout, body)))
            }));
        let mut stop = stop.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(header_timeout))
                .keep_alive_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    () = stopped(&mut stop), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(open);
        });
    }
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
