//! The whole-call deadline: `limits.request_timeout_secs`, or the caller's own `grpc-timeout`
//! when that is shorter. Owns when a call must be answered by and the answer when it is not;
//! never reads a call's messages, and never keeps a caller waiting on the audit log for more than
//! [`AUDIT_GRACE`] once the deadline has passed.
//!
//! A call is bounded until its answer begins: all of a unary call or of an ingest stream; for a
//! server-streaming call (Extract, Aggregate, audit Query and Export), until its response stream
//! is handed over, which those handlers do only once the work and its audit entry are done. A
//! transfer under way (the files of an audited release, the entries of an export) is not cut.
//!
//! Past the configured limit the call ends `DEADLINE_EXCEEDED` with a message naming the setting,
//! audited as a `limit` entry of the caller the gateway proved (the JWT subject or agency the
//! service established, else the agency of the client certificate), at most one entry per caller a
//! second like every limit. Past the caller's own shorter deadline it ends the same way, not
//! audited (the caller chose it), up to [`CALLER_MARGIN`] early so that the answer reaches the
//! caller before its own timer does: tonic's timers for a `grpc-timeout`, in client and server
//! alike, end a call `CANCELLED` ("Timeout expired"). The server's is tonic's `GrpcTimeout`,
//! which wraps every layer added with `Server::layer`: it starts just *before* [`stamp`] dates the
//! call, so only the margin puts the gateway's answer first there too (a loaded machine can still
//! let tonic's timer win, and the caller then sees `CANCELLED`).

use super::Shared;
use crate::audit::entry::Actor;
use crate::auth::{Identity, identity_from_cert};
use crate::limits::{CallerKey, Refusal};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

/// The setting the deadline enforces, as refusals name it.
pub const SETTING: &str = "limits.request_timeout_secs";

/// Longest wait for the audit entry of a call ended by the limit before the answer is sent; an
/// entry the log takes later is still written (it is appended in the background).
pub const AUDIT_GRACE: Duration = Duration::from_secs(1);

/// Most a caller's own deadline is answered ahead of time, so that the answer reaches it before
/// its own timer fires (one twentieth of the deadline, at most this).
pub const CALLER_MARGIN: Duration = Duration::from_millis(50);

/// When a call was taken (a request extension set by [`stamp`]).
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub Instant);

/// Dates a call as it is taken. Installed as the outermost of the server's own layers; tonic's
/// `grpc-timeout` timer wraps those layers and so has started just before this runs (hence
/// [`CALLER_MARGIN`]).
pub fn stamp(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrival(Instant::now()));
    Ok(req)
}

/// Where a call's identity checks leave who they proved (a request extension set by
/// [`Deadlined`]), for the audit entry of a call the deadline ends.
#[derive(Debug, Clone, Default)]
pub struct Proven(Arc<Mutex<Option<(Actor, CallerKey)>>>);

impl Proven {
    /// Records the caller of `req` as proven; without a [`Deadlined`] around the call, nothing.
    pub fn record<T>(req: &Request<T>, actor: Actor, key: CallerKey) {
        if let Some(p) = req.extensions().get::<Proven>() {
            *p.lock() = Some((actor, key));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Actor, CallerKey)>> {
        crate::unpoisoned(self.0.lock())
    }
}

/// A gRPC service whose calls are bounded by the whole-call deadline: the server wraps the
/// agent, analyst and audit services in it (health and reflection answer at once). The call's
/// identity checks record whom they proved in the [`Proven`] it adds to the request.
#[derive(Clone)]
pub struct Deadlined<S> {
    inner: S,
    shared: Shared,
}

impl<S> Deadlined<S> {
    /// `inner` under the deadline of `shared`'s limits.
    pub fn new(inner: S, shared: Shared) -> Self {
        Self { inner, shared }
    }
}

impl<S: NamedService> NamedService for Deadlined<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl<S> tonic::codegen::Service<http::Request<Body>> for Deadlined<S>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> BoxFuture {
        let deadline = Deadline::of(&req, self.shared.limits.limits().request_timeout);
        let proven = Proven::default();
        req.extensions_mut().insert(proven.clone());
        let ended = Ended {
            method: req
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            proven,
            tls: req
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .cloned(),
            peer: req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr()),
        };
        let call = self.inner.call(req);
        let shared = self.shared.clone();
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.at, call).await {
                Ok(answer) => answer,
                Err(_) => Ok(ended.answer(deadline.by, &shared).await.into_http()),
            }
        })
    }
}

/// When a call must be answered by, and whose deadline that is.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    by: By,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    /// The gateway's `request_timeout_secs`.
    Limit(Duration),
    /// The caller's shorter `grpc-timeout`.
    Caller(Duration),
}

impl Deadline {
    /// The deadline of a call taken at its [`Arrival`] (now, without one) under `limit`.
    fn of<B>(req: &http::Request<B>, limit: Duration) -> Deadline {
        let arrived = req
            .extensions()
            .get::<Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let by = match req.headers().get("grpc-timeout").and_then(grpc_timeout) {
            Some(own) if own < limit => By::Caller(own),
            _ => By::Limit(limit),
        };
        let after = match by {
            By::Limit(l) => l,
            By::Caller(own) => own.saturating_sub((own / 20).min(CALLER_MARGIN)),
        };
        let at = arrived
            .checked_add(after)
            .unwrap_or_else(|| arrived + Duration::from_secs(86_400 * 365));
        Deadline { at, by }
    }
}

/// What is known of a call the deadline may end.
struct Ended {
    /// The gRPC method name (the last part of the path).
    method: String,
    proven: Proven,
    tls: Option<TlsConnectInfo<TcpConnectInfo>>,
    peer: Option<std::net::SocketAddr>,
}

impl Ended {
    /// The status of a call its deadline ended, after auditing it when the limit ended it.
    async fn answer(self, by: By, shared: &Shared) -> Status {
        let note = match self.method.as_str() {
            "Ingest" => "the stream was ended; batches taken in before it are stored (resend the \
                         rest: duplicates are recognised)"
                .to_owned(),
            "Extract" | "Aggregate" => format!(
                "nothing was sent (the gateway builds {} releases at a time, the others wait \
                 their turn); ask again later",
                shared.limits.limits().max_concurrent_releases
            ),
            _ => "the call was ended and nothing was sent back".to_owned(),
        };
        let limit = match by {
            By::Caller(own) => {
                return Status::deadline_exceeded(format!(
                    "the caller's own deadline (grpc-timeout of {} ms) passed first; {note}",
                    own.as_millis()
                ));
            }
            By::Limit(l) => l,
        };
        let message = format!(
            "the call took longer than {} s, the most one call may take; {note}",
            limit.as_secs()
        );
        let text = format!("{SETTING}: {message}");
        let peer = self
            .peer
            .or_else(|| self.tls.as_ref().and_then(|t| t.get_ref().remote_addr()));
        let (actor, key) = self.caller(shared);
        let refusal = match &key {
            Some(k) => shared.limits.refuse(k, SETTING, message),
            // No identity to count against: every such call is audited.
            None => Refusal {
                limit: SETTING,
                message,
                audit: Some(0),
            },
        };
        let audit = {
            let shared = shared.clone();
            let status = Status::deadline_exceeded(text.clone());
            tokio::spawn(async move { shared.limit_refused(actor, peer, &refusal, status).await })
        };
        match tokio::time::timeout(AUDIT_GRACE, audit).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the task auditing a call ended by {SETTING} failed");
                Status::deadline_exceeded(text)
            }
            // The log is slow or stuck: the entry is written when it can be; the caller is not
            // kept waiting for it.
            Err(_) => {
                tracing::warn!(
                    "the audit log did not take the entry of a call ended by {SETTING} within {} s; it is written when the log can",
                    AUDIT_GRACE.as_secs()
                );
                Status::deadline_exceeded(text)
            }
        }
    }

    /// The caller the services proved, else the identity of its client certificate, else
    /// anonymous; with the key the limiter counts it by, when it has one.
    fn caller(&self, shared: &Shared) -> (Actor, Option<CallerKey>) {
        if let Some((actor, key)) = self.proven.lock().clone() {
            return (actor, Some(key));
        }
        let cert = self
            .tls
            .as_ref()
            .and_then(|t| t.peer_certs())
            .and_then(|c| c.first().cloned())
            .and_then(|leaf| identity_from_cert(leaf.as_ref(), &shared.trust_domain));
        match cert {
            Some(Identity::Agent(a)) => (
                Actor::agent(a.as_str(), &shared.trust_domain),
                Some(CallerKey::Agency(a.to_string())),
            ),
            Some(id) => (shared.actor(&id), None),
            None => (Actor::anonymous(), None),
        }
    }
}

/// A `grpc-timeout` header value (1 to 8 digits and a unit, as gRPC over HTTP/2 defines it).
fn grpc_timeout(v: &http::HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> Option<Duration> {
        grpc_timeout(&http::HeaderValue::from_str(s).expect("header"))
    }

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_defines_them() {
        assert_eq!(header("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(header("2M"), Some(Duration::from_secs(120)));
        assert_eq!(header("42S"), Some(Duration::from_secs(42)));
        assert_eq!(header("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(header("7u"), Some(Duration::from_micros(7)));
        assert_eq!(header("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", " 1S", "oneS"] {
            assert_eq!(header(bad), None, "{bad:?}");
        }
    }

    fn deadline(timeout: Option<&str>, limit: Duration) -> (Deadline, Instant) {
        let t0 = Instant::now();
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Arrival(t0));
        if let Some(t) = timeout {
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_str(t).expect("v"));
        }
        (Deadline::of(&req, limit), t0)
    }

    #[test]
    fn the_shorter_of_the_limit_and_the_callers_deadline_counts_from_arrival() {
        let limit = Duration::from_secs(600);
        let (d, t0) = deadline(None, limit);
        assert_eq!((d.by, d.at), (By::Limit(limit), t0 + limit));
        let (d, t0) = deadline(Some("700S"), limit);
        assert_eq!((d.by, d.at), (By::Limit(limit), t0 + limit), "a longer one");
        // The caller's own: answered a little early, so the answer arrives in time.
        let (d, t0) = deadline(Some("2S"), limit);
        assert_eq!(d.by, By::Caller(Duration::from_secs(2)));
        assert_eq!(d.at, t0 + Duration::from_millis(1950));
        let (d, t0) = deadline(Some("100m"), limit);
        assert_eq!(d.at, t0 + Duration::from_millis(95));
        let (d, _) = deadline(Some("garbage"), limit);
        assert_eq!(d.by, By::Limit(limit), "an unreadable header is ignored");
    }
}
