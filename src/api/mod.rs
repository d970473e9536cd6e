//! The admin HTTP API (`[admin]`): JSON under `/api/v1/`, its OpenAPI document, and
//! Prometheus `/metrics`, on a listener of its own (HTTP, or HTTPS with the endpoints'
//! certificate). Every request but the document's names an API key
//! (`Authorization: Bearer mgk_...`), which gives its caller: the operator or one tenant's
//! admin; the operations layer does the rest.
//!
//! Bounded everywhere: request headers must arrive within 10 s, a request must finish
//! within `request_timeout` (408), bodies are at most `max_body` (413), at most
//! `max_connections` connections are served at once, a connection lives at most 10
//! minutes, and a panic in a handler is a 500, not a dead listener.

pub mod error;
pub mod openapi;
pub mod routes;

use crate::metrics::Metrics;
use crate::ops::{Caller, Ops, Scope};
use error::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every handler shares.
pub struct ApiState {
    pub ops: Ops,
    pub metrics: Arc<Metrics>,
    pub metrics_public: bool,
    pub openapi: serde_json::Value,
}

pub type AppState = Arc<ApiState>;

/// The client's address, put on each request by the connection that carried it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// The body limit, put on each request for the JSON extractor.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The caller of a request, from its API key (401 without a valid one).
pub struct Auth(pub Caller);

impl axum::extract::FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = parts.extensions.get::<ClientAddr>().copied();
        authenticate(state, &parts.headers, client).await.map(Auth)
    }
}

/// Checks the request's key: 401 with the reason when it is missing or refused.
pub async fn authenticate(s: &ApiState, headers: &axum::http::HeaderMap, client: Option<ClientAddr>) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("no API key: send Authorization: Bearer <key> (mailgate apikey add)"));
    };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim);
    let Some(token) = token else {
        return Err(ApiError::unauthorized("the Authorization header must be Bearer <key>"));
    };
    let ip = client.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let verdict = s.ops.directory().verify_api_key(token, ip, s.ops.today()).await.map_err(crate::ops::OpsError::from)?;
    match verdict {
        Ok(key) => Ok(Caller::key(&key)),
        Err(refusal) => {
            tracing::info!(client = %ip, reason = refusal.as_str(), "admin API key refused");
            use crate::directory::KeyRefusal as K;
            Err(ApiError::unauthorized(match refusal {
                K::Malformed => "this is not a Mailgate API key (mgk_<id>_<secret>)",
                K::Unknown => "unknown API key",
                K::Revoked => "this API key was revoked",
                K::Expired => "this API key has expired",
                K::AddressNotAllowed => "this API key may not be used from your address",
            }))
        }
    }
}

/// The metrics text, with the values read at scrape time brought up to date.
pub async fn scrape(s: &ApiState) -> String {
    let operator = Caller { actor: "metrics".into(), scope: Scope::Operator };
    if let Ok(entries) = s.ops.queue_list(&operator, &Default::default()).await {
        let count = |state: &str| entries.iter().filter(|e| crate::ops::entry_state(e) == state).count() as i64;
        s.metrics.set_queue(&[("deferred", count("deferred")), ("held", count("held")), ("finishing", count("finishing"))]);
    }
    if let Ok(tenants) = s.ops.list_tenants(&operator).await {
        let ends: Vec<(String, chrono::NaiveDate)> =
            tenants.iter().filter(|t| t.legacy.allowed).filter_map(|t| t.legacy.until.map(|d| (t.name.clone(), d))).collect();
        s.metrics.set_opt_in_until(&ends);
    }
    s.metrics.render()
}

/// The router: every route of the table, a JSON 404/405 for the rest.
pub fn router(state: AppState) -> axum::Router {
    let mut by_path: std::collections::BTreeMap<&'static str, axum::routing::MethodRouter<AppState>> = Default::default();
    for (doc, handler) in routes::table() {
        let entry = by_path.remove(doc.path);
        by_path.insert(doc.path, match entry {
            Some(existing) => existing.merge(handler),
            None => handler,
        });
    }
    let mut r = axum::Router::new();
    for (path, handler) in by_path {
        r = r.route(path, handler);
    }
    r.fallback(|| async { ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such API route; see /api/v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method; see /api/v1/openapi.json")
        })
        .with_state(state)
}

/// The OpenAPI document of the routes.
pub fn openapi_document() -> serde_json::Value {
    let docs: Vec<openapi::Doc> = routes::table().into_iter().map(|(d, _)| d).collect();
    openapi::document(&docs)
}

/// Serves the admin API on `listener` until `shutdown`.
pub fn spawn(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: &crate::config::AdminConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use tower::ServiceExt;
    let limit = BodyLimit(config.max_body);
    let timeout = Duration::from_secs(config.request_timeout);
    let app = router(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("admin API handler panicked");
            axum::response::IntoResponse::into_response(ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "the server failed on this request"))
        }))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout));
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let svc = app.clone().map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                req.extensions_mut().insert(limit);
                req
            });
            let tls = tls.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let io: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Box::new(s),
                        _ => return,
                    },
                };
                let service = hyper_util::service::TowerToHyperService::new(svc);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service);
                tokio::pin!(conn);
                let lifetime = tokio::time::sleep(Duration::from_secs(600));
                tokio::pin!(lifetime);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = &mut lifetime => conn.as_mut().graceful_shutdown(),
                    _ = stop.changed() => conn.as_mut().graceful_shutdown(),
                }
                let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
            });
        }
    })
}

/// A connection's byte stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
