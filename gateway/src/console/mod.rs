//! The console listener: HTTPS (rustls, the gateway's own certificate, no client certificate
//! asked), HTTP/1.1, separate from the gRPC port, for information governance officers and
//! operators.
//!
//! Serves server-rendered pages (no script) to a session of role `auditor` or `admin`: the
//! audit log with filters, an entry with its inclusion proof checked by the server against a
//! freshly signed checkpoint, the latest checkpoint with a full verification of the log, the
//! agreements in force with expiry and review dates flagged, releases per agreement, and the
//! person-releases lookup. `GET /metrics` serves Prometheus text ([`crate::metrics`]) to the
//! same roles, with a bearer JWT or a session.
//!
//! Sign-in (dev setup): `/login` takes a JWT as `gateway token` prints it; the console checks
//! it with the gateway's JWT verifier and keeps it in a `Secure; HttpOnly; SameSite=Strict`
//! cookie, re-verified on every request (expiry included). A token without the role is
//! refused and the refusal audited. Reading audit content (entries, releases, a person lookup)
//! is audited before it is shown, as over gRPC. Never serves a field value or token of a
//! record.

mod html;
mod pages;

use crate::audit::entry::{Action, Actor, Decision, Entry};
use crate::jwt::{Claims, Role};
use crate::policy::decide::Requester;
use crate::service::Shared;
use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The session cookie's name.
const COOKIE: &str = "skp_console";
/// Largest request body read (a sign-in or lookup form).
const MAX_BODY: usize = 64 * 1024;

/// Starts the console on `addr`; returns the bound address. Connections are served until the
/// process ends.
pub async fn start(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    shared: Shared,
) -> Result<SocketAddr> {
    let certs = crate::tls::read_certs(cert)?;
    let key = crate::tls::read_key(key)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the console's TLS certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (console)"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                let Ok(Ok(tls)) = handshake.await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, &shared, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    tracing::info!(addr = %bound, "console listening (HTTPS: pages for auditors, /metrics)");
    Ok(bound)
}

/// A response under construction.
pub(crate) struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    headers: Vec<(hyper::header::HeaderName, String)>,
}

impl Reply {
    /// An HTML page.
    pub(crate) fn page(status: StatusCode, title: &str, who: Option<&str>, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8",
            body: html::layout(title, who, body),
            headers: Vec::new(),
        }
    }

    fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    fn redirect(to: &str) -> Reply {
        let mut r = Reply::text(StatusCode::SEE_OTHER, "text/plain", String::new());
        r.headers.push((hyper::header::LOCATION, to.to_owned()));
        r
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(self.body)));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        let fixed = [
            (hyper::header::CONTENT_TYPE, self.content_type),
            (hyper::header::CACHE_CONTROL, "no-store"),
            (hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (hyper::header::REFERRER_POLICY, "no-referrer"),
            (hyper::header::X_FRAME_OPTIONS, "DENY"),
            (
                hyper::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
            (hyper::header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        ];
        for (name, value) in fixed {
            h.insert(name, hyper::header::HeaderValue::from_static(value));
        }
        for (name, value) in self.headers {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
        r
    }
}

/// Who is signed in.
pub(crate) struct Session {
    /// The JWT's subject, agency and roles.
    pub requester: Requester,
}

impl Session {
    /// The audit actor of this session.
    pub(crate) fn actor(&self, shared: &Shared) -> Actor {
        shared.analyst_actor(&self.requester)
    }
}

fn requester(c: &Claims) -> Requester {
    Requester {
        sub: c.sub.clone(),
        agency: c.agency.as_ref().map(|a| a.to_string()),
        roles: c.roles.iter().map(|r| r.as_str().to_string()).collect(),
    }
}

/// Why a request has no usable session.
enum Refusal {
    /// No token, or one the verifier refuses (reason).
    Unauthenticated(String),
    /// A valid token without the role `auditor` or `admin`.
    Forbidden(Requester),
}

/// Checks a JWT: valid, and of role auditor or admin.
fn check_token(shared: &Shared, token: &str) -> Result<Session, Refusal> {
    let claims = shared
        .jwt
        .verify(token.trim(), shared.now())
        .map_err(|e| Refusal::Unauthenticated(e.to_string()))?;
    let who = requester(&claims);
    if claims.has(Role::Auditor) || claims.has(Role::Admin) {
        Ok(Session { requester: who })
    } else {
        Err(Refusal::Forbidden(who))
    }
}

/// The session of a request: its cookie, or a bearer token.
fn session<B>(shared: &Shared, req: &Request<B>) -> Result<Session, Refusal> {
    let headers = req.headers();
    let bearer = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| html::cookie(h, COOKIE));
    match bearer.or(cookie) {
        Some(t) => check_token(shared, t),
        None => Err(Refusal::Unauthenticated("no token".into())),
    }
}

/// Audits a refused sign-in or page request.
async fn audit_refusal(shared: &Shared, actor: Actor, reason: String, peer: SocketAddr) {
    tracing::warn!(%peer, reason = %reason, "console request refused");
    let mut e = Entry::new(actor, Action::AuthFailure, Decision::Deny);
    e.reason = Some(reason);
    e.peer = Some(peer.to_string());
    if let Err(err) = shared.audit.append_one(e).await {
        tracing::error!(error = %err, "cannot audit a refused console request");
    }
}

fn forbidden_page(who: &Requester) -> Reply {
    Reply::page(
        StatusCode::FORBIDDEN,
        "Not allowed",
        None,
        &format!(
            "<p class=\"error\" id=\"refused\">{} has the role(s) {}; the console is for the \
             roles <b>auditor</b> and <b>admin</b>. This refusal is recorded in the audit \
             log.</p><p><a href=\"/login\">Sign in with another token</a></p>",
            html::esc(&who.sub),
            html::esc(&who.roles.join(", "))
        ),
    )
}

async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    route(req, shared, peer).await.into_response()
}

async fn route(req: Request<Incoming>, shared: &Shared, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let query = html::parse_form(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/style.css") => {
            return Reply::text(StatusCode::OK, "text/css", html::CSS.to_owned());
        }
        (Method::GET, "/login") => return pages::login(None),
        (Method::POST, "/login") => return login(req, shared, peer).await,
        (Method::POST, "/logout") => {
            let mut r = Reply::redirect("/login");
            r.headers.push((
                hyper::header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
            ));
            return r;
        }
        _ => {}
    }
    let known = matches!(
        path.as_str(),
        "/" | "/metrics" | "/entries" | "/checkpoint" | "/agreements" | "/releases" | "/person"
    ) || path.starts_with("/entries/");
    if !known {
        return Reply::page(
            StatusCode::NOT_FOUND,
            "Not found",
            None,
            "<p>No such page. <a href=\"/entries\">Audit log</a></p>",
        );
    }
    let allowed = method == Method::GET || (method == Method::POST && path == "/person");
    if !allowed {
        return Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    let s = match session(shared, &req) {
        Ok(s) => s,
        Err(Refusal::Unauthenticated(reason)) => {
            if path == "/metrics" {
                return Reply::text(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "a bearer JWT of the partnership's identity provider is required\n".into(),
                );
            }
            if reason != "no token" {
                audit_refusal(
                    shared,
                    Actor::anonymous(),
                    format!("console: token refused: {reason}"),
                    peer,
                )
                .await;
            }
            return Reply::redirect("/login");
        }
        Err(Refusal::Forbidden(who)) => {
            audit_refusal(
                shared,
                shared.analyst_actor(&who),
                format!(
                    "console: {} lacks the role auditor or admin ({})",
                    who.sub, path
                ),
                peer,
            )
            .await;
            if path == "/metrics" {
                return Reply::text(
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    "the metrics need the role auditor or admin\n".into(),
                );
            }
            return forbidden_page(&who);
        }
    };
    match path.as_str() {
        "/" => Reply::redirect("/entries"),
        "/metrics" => {
            let now = time::OffsetDateTime::now_utc();
            let body = crate::metrics::global().render(shared.audit.size(), now.unix_timestamp());
            Reply::text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        "/entries" => pages::entries(shared, &s, &query).await,
        "/checkpoint" => pages::checkpoint(shared, &s).await,
        "/agreements" => pages::agreements(shared, &s),
        "/releases" => pages::releases(shared, &s).await,
        "/person" if method == Method::POST => match read_form(req).await {
            Ok(form) => pages::person_lookup(shared, &s, &form).await,
            Err(r) => r,
        },
        "/person" => pages::person_form(&s, None),
        p => match p.strip_prefix("/entries/").map(str::parse::<u64>) {
            Some(Ok(i)) => pages::entry(shared, &s, i).await,
            _ => Reply::page(
                StatusCode::NOT_FOUND,
                "Not found",
                Some(&s.requester.sub),
                "<p>An entry is named by its index, e.g. <code>/entries/12</code>.</p>",
            ),
        },
    }
}

/// Reads a form body of at most [`MAX_BODY`] bytes.
async fn read_form(
    req: Request<Incoming>,
) -> Result<std::collections::BTreeMap<String, String>, Reply> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            Reply::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("the form is unreadable or larger than {MAX_BODY} bytes\n"),
            )
        })?
        .to_bytes();
    Ok(html::parse_form(&String::from_utf8_lossy(&body)))
}

/// `POST /login`: checks the token and starts a session, or says why not.
async fn login(req: Request<Incoming>, shared: &Shared, peer: SocketAddr) -> Reply {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let token = form.get("token").map(|t| t.trim()).unwrap_or("");
    if token.is_empty() {
        return pages::login(Some("Paste the token that `gateway token` printed."));
    }
    match check_token(shared, token) {
        Ok(s) => {
            tracing::info!(sub = %s.requester.sub, "console sign-in");
            let mut r = Reply::redirect("/entries");
            r.headers.push((
                hyper::header::SET_COOKIE,
                format!("{COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            ));
            r
        }
        Err(Refusal::Unauthenticated(reason)) => {
            audit_refusal(
                shared,
                Actor::anonymous(),
                format!("console sign-in: token refused: {reason}"),
                peer,
            )
            .await;
            let mut r = pages::login(Some(&format!("The token was refused: {reason}.")));
            r.status = StatusCode::UNAUTHORIZED;
            r
        }
        Err(Refusal::Forbidden(who)) => {
            audit_refusal(
                shared,
                shared.analyst_actor(&who),
                format!(
                    "console sign-in: {} lacks the role auditor or admin",
                    who.sub
                ),
                peer,
            )
            .await;
            forbidden_page(&who)
        }
    }
}
