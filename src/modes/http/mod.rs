//! `mode=http`: the function is a long-running HTTP server, `fprocess`, listening on
//! `upstream_url`; every request is proxied to it. [`supervisor`] owns the child process (start,
//! logs, death, stop after the drain), [`proxy`] one request's way there and back, [`headers`]
//! the rules for what crosses, [`pool`] the connections to the function.

mod headers;
mod pool;
mod proxy;
mod supervisor;

use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Request, Response};
use tokio::sync::watch;

use super::{BoxFuture, Handler, Scope};
use crate::body::{Body, RequestBody};
use crate::config::{Config, UpstreamUrl, go_duration};
use crate::process;
use supervisor::Supervisor;

pub struct Http {
    cfg: Arc<Config>,
    upstream: UpstreamUrl,
    pool: Arc<pool::Pool>,
    /// The `Host` a request without one gets: the function's address, as Go sends it.
    host: HeaderValue,
    child: Supervisor,
    /// Set once the function accepts connections; requests that arrive earlier wait for it.
    ready: watch::Sender<bool>,
}

impl Http {
    /// Starts the function; [`Handler::started`] then waits until it listens.
    pub fn start(cfg: &Arc<Config>) -> Result<Http, String> {
        let upstream = cfg.upstream_url.clone().ok_or("upstream_url: mode=http needs it")?;
        let host = match upstream.authority.port_u16() {
            Some(port) if port != 80 => format!("{}:{port}", upstream.authority.host()),
            _ => upstream.authority.host().to_string(),
        };
        let host = HeaderValue::from_str(&host).map_err(|e| format!("upstream_url: {e}"))?;
        let pool = pool::Pool::new(upstream.host(), upstream.port());
        let child = Supervisor::spawn(cfg)?;
        Ok(Http { cfg: Arc::clone(cfg), upstream, pool, host, child, ready: watch::Sender::new(false) })
    }
}

impl Handler for Http {
    fn call(self: Arc<Self>, req: Request<RequestBody>, scope: Scope) -> BoxFuture<Response<Body>> {
        Box::pin(async move { self.forward(req, scope).await })
    }

    fn time_limit(&self, headers: &hyper::HeaderMap) -> Option<std::time::Duration> {
        headers::Limit::of(&self.cfg, headers).map(|limit| limit.after)
    }

    /// Resolves once the function accepts connections on `upstream_url`; fails when it exits first
    /// or `start_timeout` passes.
    fn started(&self) -> BoxFuture<Result<(), String>> {
        let listening = supervisor::wait_listening(self.upstream.host().to_string(), self.upstream.port());
        let exited = self.child.exited();
        let upstream = self.upstream.to_string();
        let limit = self.cfg.start_timeout;
        let ready = self.ready.clone();
        Box::pin(async move {
            let wait = async {
                tokio::select! {
                    () = listening => Ok(()),
                    exit = exited => Err(format!(
                        "fprocess exited before it accepted connections on {upstream}: {}",
                        process::describe(exit.status)
                    )),
                }
            };
            let result = match limit {
                Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
                    Err(format!(
                        "start_timeout: the function did not accept connections on {upstream} within {}",
                        go_duration(limit)
                    ))
                }),
                None => wait.await,
            };
            ready.send_replace(result.is_ok());
            result
        })
    }

    /// Resolves when the function exits by itself: the watchdog then exits too (non-zero), so
    /// that the orchestrator restarts the container.
    fn failed(&self) -> BoxFuture<i32> {
        let exited = self.child.exited();
        Box::pin(async move {
            let exit = exited.await;
            if exit.stopped {
                return std::future::pending().await;
            }
            supervisor::exit_code(exit.status)
        })
    }

    /// After the drain: SIGTERM to the function's process group, SIGKILL after
    /// [`supervisor::STOP_GRACE`].
    fn stop(&self) -> BoxFuture<()> {
        Box::pin(self.child.stop())
    }
}
