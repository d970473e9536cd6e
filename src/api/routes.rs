//! The admin API's routes: one table gives each route its handler and its documentation
//! (the router and the OpenAPI document are both made from it). Handlers parse, call the
//! operations layer with the key's caller, and return JSON: nothing is decided here.

use super::error::{ApiError, Json, PathParam, Query};
use super::openapi::{schema_of, Doc};
use super::{AppState, Auth};
use axum::extract::State;
use crate::directory::{ApiKey, AuditRecord, Ban, BanKind, Domain, LegacySettings, Tenant, User, UserChanges};
use crate::ops::{BanRequest, BanSelector, KeyRequest, LegacyUpdate, NewUser, Notified, QueueAction, QueueFilter, ReportQuery, WhatIfQuery};
use crate::queue::ops::EntryView;
use crate::usage::report::{LegacyRow, TlsRow, WhatIfRow};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, MethodRouter};
use serde::{Deserialize, Serialize};

type R<T> = Result<axum::Json<T>, ApiError>;
type Created<T> = Result<(StatusCode, axum::Json<T>), ApiError>;

fn ok<T>(v: T) -> R<T> {
    Ok(axum::Json(v))
}

fn created<T>(v: T) -> Created<T> {
    Ok((StatusCode::CREATED, axum::Json(v)))
}

// ---- request and response shapes --------------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// Only this tenant's objects (a tenant key: its own, the default).
    pub tenant: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Letters, digits, `-`, `_` and `.`; at most 64.
    pub name: String,
}

/// Changes to a tenant's legacy TLS settings; a field left out is left as it is.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyPatch {
    /// The tenant's opt-in.
    pub allowed: Option<bool>,
    /// Last day (inclusive) of the opt-in, YYYY-MM-DD, today or later; `null` removes it.
    #[serde(default, deserialize_with = "some")]
    #[schemars(with = "Option<chrono::NaiveDate>")]
    pub until: Option<Option<chrono::NaiveDate>>,
    /// Only these users (addresses of the tenant); `[]` means all users.
    pub users: Option<Vec<String>>,
    /// Only clients in these networks (CIDR or address); `[]` means any network.
    pub networks: Option<Vec<String>>,
    /// The operator's veto (operator keys only).
    pub forbidden: Option<bool>,
}

/// A present field, even `null`, is `Some`.
fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    pub name: String,
    pub tenant: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub address: String,
    /// At least 8 characters; left out, one is generated and returned once.
    pub password: Option<String>,
    /// SMTP AUTH allowed (default true).
    pub smtp_auth: Option<bool>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct CreatedUser {
    pub user: User,
    /// The generated password, shown this once.
    pub password: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub enabled: Option<bool>,
    pub smtp_auth: Option<bool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// Left out: one is generated and returned once.
    pub password: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct PasswordResult {
    /// The generated password, shown this once.
    pub password: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub tenant: Option<String>,
    /// The last N days or weeks ending today: `7d`, `90d`, `12w` (default 7d).
    pub since: Option<String>,
    /// First day, YYYY-MM-DD.
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD (default today).
    pub to: Option<String>,
}

impl ReportParams {
    fn query(self) -> ReportQuery {
        ReportQuery { tenant: self.tenant, since: self.since, from: self.from, to: self.to }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIfParams {
    pub tenant: Option<String>,
    pub since: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The date to evaluate, YYYY-MM-DD.
    pub on: Option<String>,
    /// The tenant's legacy opt-in switched off.
    pub disable_legacy: Option<bool>,
    /// A kind of suite no longer served: `static-rsa` or `cbc`.
    pub drop: Option<String>,
    /// With `drop`: only this endpoint.
    pub endpoint: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueParams {
    pub tenant: Option<String>,
    /// `held`, `deferred` or `finishing`.
    pub state: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct QueueResult {
    pub id: String,
    /// `retry`, `hold`, `release`, `delete` or `bounce`.
    pub action: String,
    pub server: Notified,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// An operator key (operator keys only).
    pub operator: Option<bool>,
    /// A key for this tenant's admin.
    pub tenant: Option<String>,
    pub description: Option<String>,
    /// Last day (inclusive, UTC) it works.
    pub expires: Option<chrono::NaiveDate>,
    /// Accept it only from these networks (CIDR or address).
    pub allow_ips: Option<Vec<String>>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct CreatedKey {
    pub key: ApiKey,
    /// The whole key, `mgk_<id>_<secret>`: shown this once.
    pub secret: String,
}

/// A ban to make (operator keys only).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBanBody {
    /// `address` (an address or a CIDR network) or `login`.
    pub kind: BanKind,
    pub target: String,
    /// `90s`, `30m`, `2h`, `7d`; default `[auth_limits] ban_time`.
    pub duration: Option<String>,
    pub reason: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    pub tenant: Option<String>,
    /// The last N days or weeks (default 30d).
    pub since: Option<String>,
    /// At most this many records, newest first (1-10000, default 1000).
    pub limit: Option<u32>,
}

// ---- handlers ---------------------------------------------------------------------------

async fn list_tenants(State(s): State<AppState>, Auth(c): Auth) -> R<Vec<Tenant>> {
    ok(s.ops.list_tenants(&c).await?)
}

async fn add_tenant(State(s): State<AppState>, Auth(c): Auth, Json(b): Json<NewTenant>) -> Created<Tenant> {
    created(s.ops.add_tenant(&c, &b.name).await?)
}

async fn show_tenant(State(s): State<AppState>, Auth(c): Auth, PathParam(t): PathParam) -> R<Tenant> {
    ok(s.ops.tenant(&c, &t).await?)
}

async fn show_legacy(State(s): State<AppState>, Auth(c): Auth, PathParam(t): PathParam) -> R<LegacySettings> {
    ok(s.ops.legacy_settings(&c, &t).await?)
}

async fn set_legacy(State(s): State<AppState>, Auth(c): Auth, PathParam(t): PathParam, Json(b): Json<LegacyPatch>) -> R<LegacySettings> {
    let u = LegacyUpdate { allowed: b.allowed, until: b.until, users: b.users, networks: b.networks, forbidden: b.forbidden };
    ok(s.ops.set_legacy(&c, &t, &u).await?)
}

async fn list_domains(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<TenantQuery>) -> R<Vec<Domain>> {
    ok(s.ops.list_domains(&c, q.tenant.as_deref()).await?)
}

async fn add_domain(State(s): State<AppState>, Auth(c): Auth, Json(b): Json<NewDomain>) -> Created<Domain> {
    created(s.ops.add_domain(&c, &b.name, &b.tenant).await?)
}

async fn list_users(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<TenantQuery>) -> R<Vec<User>> {
    ok(s.ops.list_users(&c, q.tenant.as_deref()).await?)
}

async fn add_user(State(s): State<AppState>, Auth(c): Auth, Json(b): Json<NewUserBody>) -> Created<CreatedUser> {
    let new = NewUser { address: b.address, password: b.password, smtp_auth: b.smtp_auth.unwrap_or(true) };
    let (user, password) = s.ops.add_user(&c, &new).await?;
    created(CreatedUser { user, password })
}

async fn show_user(State(s): State<AppState>, Auth(c): Auth, PathParam(a): PathParam) -> R<User> {
    ok(s.ops.user(&c, &a).await?)
}

async fn set_user(State(s): State<AppState>, Auth(c): Auth, PathParam(a): PathParam, Json(b): Json<UserPatch>) -> R<User> {
    ok(s.ops.set_user(&c, &a, &UserChanges { enabled: b.enabled, smtp_auth: b.smtp_auth }).await?)
}

async fn set_password(State(s): State<AppState>, Auth(c): Auth, PathParam(a): PathParam, Json(b): Json<PasswordBody>) -> R<PasswordResult> {
    ok(PasswordResult { password: s.ops.set_password(&c, &a, b.password.as_deref()).await? })
}

async fn report_tls(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<ReportParams>) -> R<Vec<TlsRow>> {
    ok(s.ops.tls_report(&c, &q.query()).await?)
}

async fn report_legacy(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<ReportParams>) -> R<Vec<LegacyRow>> {
    ok(s.ops.legacy_report(&c, &q.query()).await?)
}

async fn report_what_if(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<WhatIfParams>) -> R<Vec<WhatIfRow>> {
    let r = ReportQuery { tenant: q.tenant, since: q.since, from: q.from, to: q.to };
    let w = WhatIfQuery { on: q.on, disable_legacy: q.disable_legacy.unwrap_or(false), drop: q.drop, endpoint: q.endpoint };
    ok(s.ops.what_if(&c, &r, &w).await?)
}

async fn queue_list(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<QueueParams>) -> R<Vec<EntryView>> {
    ok(s.ops.queue_list(&c, &QueueFilter { tenant: q.tenant, state: q.state }).await?)
}

async fn queue_show(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<EntryView> {
    ok(s.ops.queue_show(&c, &id).await?)
}

async fn queue_act(s: &super::ApiState, c: &crate::ops::Caller, id: String, action: QueueAction, name: &str) -> R<QueueResult> {
    let server = s.ops.queue_act(c, &id, action).await?;
    ok(QueueResult { id, action: name.to_string(), server })
}

async fn queue_retry(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<QueueResult> {
    queue_act(&s, &c, id, QueueAction::Retry, "retry").await
}

async fn queue_hold(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<QueueResult> {
    queue_act(&s, &c, id, QueueAction::Hold, "hold").await
}

async fn queue_release(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<QueueResult> {
    queue_act(&s, &c, id, QueueAction::Release, "release").await
}

async fn queue_bounce(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<QueueResult> {
    queue_act(&s, &c, id, QueueAction::Bounce, "bounce").await
}

async fn queue_delete(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<QueueResult> {
    queue_act(&s, &c, id, QueueAction::Delete, "delete").await
}

async fn list_keys(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<TenantQuery>) -> R<Vec<ApiKey>> {
    ok(s.ops.list_keys(&c, q.tenant.as_deref()).await?)
}

async fn add_key(State(s): State<AppState>, Auth(c): Auth, Json(b): Json<NewKeyBody>) -> Created<CreatedKey> {
    let r = KeyRequest {
        operator: b.operator.unwrap_or(false),
        tenant: b.tenant,
        description: b.description.unwrap_or_default(),
        expires: b.expires,
        allow_ips: b.allow_ips.unwrap_or_default(),
    };
    let (key, secret) = s.ops.add_key(&c, &r).await?;
    created(CreatedKey { key, secret })
}

async fn revoke_key(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<ApiKey> {
    ok(s.ops.revoke_key(&c, &id).await?)
}

async fn list_bans(State(s): State<AppState>, Auth(c): Auth) -> R<Vec<Ban>> {
    ok(s.ops.list_bans(&c).await?)
}

async fn add_ban(State(s): State<AppState>, Auth(c): Auth, Json(b): Json<NewBanBody>) -> Created<Ban> {
    let r = BanRequest { kind: b.kind, target: b.target, duration: b.duration, reason: b.reason.unwrap_or_default() };
    created(s.ops.add_ban(&c, &r).await?)
}

async fn remove_ban(State(s): State<AppState>, Auth(c): Auth, PathParam(id): PathParam) -> R<Ban> {
    // An id that is not a number names no ban: "not found", like an unknown one.
    let id = id.parse::<i64>().unwrap_or(-1);
    ok(s.ops.remove_ban(&c, &BanSelector::Id(id)).await?)
}

async fn audit(State(s): State<AppState>, Auth(c): Auth, Query(q): Query<AuditParams>) -> R<Vec<AuditRecord>> {
    ok(s.ops.audit(&c, q.tenant.as_deref(), q.since.as_deref(), q.limit).await?)
}

async fn openapi(State(s): State<AppState>) -> Response {
    axum::Json(s.openapi.clone()).into_response()
}

async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap, client: Option<axum::Extension<super::ClientAddr>>) -> Result<Response, ApiError> {
    if !s.metrics_public {
        let caller = super::authenticate(&s, &headers, client.map(|c| c.0)).await?;
        if !caller.is_operator() {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "/metrics is for the operator; a tenant admin's key cannot read it"));
        }
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], super::scrape(&s).await).into_response())
}

/// Every route: its documentation and its handler.
pub fn table() -> Vec<(Doc, MethodRouter<super::AppState>)> {
    use Method as M;
    vec![
        (Doc::new(M::GET, "/api/v1/openapi.json", "This document").public().ok(200, schema_of::<serde_json::Value>), get(openapi)),
        (Doc::new(M::GET, "/metrics", "Prometheus metrics (operator key, or none with [admin] metrics_public)").operator(), get(metrics)),
        (Doc::new(M::GET, "/api/v1/tenants", "Tenants (a tenant key: its own)").ok(200, schema_of::<Vec<Tenant>>), get(list_tenants)),
        (Doc::new(M::POST, "/api/v1/tenants", "Create a tenant").operator().body(schema_of::<NewTenant>).ok(201, schema_of::<Tenant>), post(add_tenant)),
        (Doc::new(M::GET, "/api/v1/tenants/{tenant}", "One tenant").ok(200, schema_of::<Tenant>), get(show_tenant)),
        (Doc::new(M::GET, "/api/v1/tenants/{tenant}/legacy", "A tenant's legacy TLS settings").ok(200, schema_of::<LegacySettings>), get(show_legacy)),
        (
            Doc::new(M::PATCH, "/api/v1/tenants/{tenant}/legacy", "Change a tenant's legacy TLS settings (all given values or none)")
                .body(schema_of::<LegacyPatch>)
                .ok(200, schema_of::<LegacySettings>),
            patch(set_legacy),
        ),
        (Doc::new(M::GET, "/api/v1/domains", "Accepted domains").query(schema_of::<TenantQuery>).ok(200, schema_of::<Vec<Domain>>), get(list_domains)),
        (Doc::new(M::POST, "/api/v1/domains", "Add an accepted domain to a tenant").operator().body(schema_of::<NewDomain>).ok(201, schema_of::<Domain>), post(add_domain)),
        (Doc::new(M::GET, "/api/v1/users", "Users").query(schema_of::<TenantQuery>).ok(200, schema_of::<Vec<User>>), get(list_users)),
        (Doc::new(M::POST, "/api/v1/users", "Add a user").body(schema_of::<NewUserBody>).ok(201, schema_of::<CreatedUser>), post(add_user)),
        (Doc::new(M::GET, "/api/v1/users/{address}", "One user").ok(200, schema_of::<User>), get(show_user)),
        (Doc::new(M::PATCH, "/api/v1/users/{address}", "Change a user (enabled, smtp_auth)").body(schema_of::<UserPatch>).ok(200, schema_of::<User>), patch(set_user)),
        (
            Doc::new(M::POST, "/api/v1/users/{address}/password", "Set a new password (given, or generated and returned once)")
                .body(schema_of::<PasswordBody>)
                .ok(200, schema_of::<PasswordResult>),
            post(set_password),
        ),
        (Doc::new(M::GET, "/api/v1/reports/tls", "Per sender: messages, TLS version shares, endpoints, devices").query(schema_of::<ReportParams>).ok(200, schema_of::<Vec<TlsRow>>), get(report_tls)),
        (Doc::new(M::GET, "/api/v1/reports/legacy", "Senders and devices below TLS 1.2, refused attempts included").query(schema_of::<ReportParams>).ok(200, schema_of::<Vec<LegacyRow>>), get(report_legacy)),
        (Doc::new(M::GET, "/api/v1/reports/what-if", "Who would fail on a date, with the opt-in off, or without a kind of suite").query(schema_of::<WhatIfParams>).ok(200, schema_of::<Vec<WhatIfRow>>), get(report_what_if)),
        (Doc::new(M::GET, "/api/v1/queue", "Queued messages, oldest first").query(schema_of::<QueueParams>).ok(200, schema_of::<Vec<EntryView>>), get(queue_list)),
        (Doc::new(M::GET, "/api/v1/queue/{id}", "One queued message").ok(200, schema_of::<EntryView>), get(queue_show)),
        (Doc::new(M::DELETE, "/api/v1/queue/{id}", "Delete a message (not delivered, sender not told)").ok(200, schema_of::<QueueResult>), delete(queue_delete)),
        (Doc::new(M::POST, "/api/v1/queue/{id}/retry", "Attempt delivery now").ok(200, schema_of::<QueueResult>), post(queue_retry)),
        (Doc::new(M::POST, "/api/v1/queue/{id}/hold", "Stop attempts until released").ok(200, schema_of::<QueueResult>), post(queue_hold)),
        (Doc::new(M::POST, "/api/v1/queue/{id}/release", "Resume attempts").ok(200, schema_of::<QueueResult>), post(queue_release)),
        (Doc::new(M::POST, "/api/v1/queue/{id}/bounce", "Give up; the sender gets a DSN").ok(200, schema_of::<QueueResult>), post(queue_bounce)),
        (Doc::new(M::GET, "/api/v1/apikeys", "API keys (never their secrets)").query(schema_of::<TenantQuery>).ok(200, schema_of::<Vec<ApiKey>>), get(list_keys)),
        (Doc::new(M::POST, "/api/v1/apikeys", "Make an API key; the secret is returned once").body(schema_of::<NewKeyBody>).ok(201, schema_of::<CreatedKey>), post(add_key)),
        (Doc::new(M::DELETE, "/api/v1/apikeys/{id}", "Revoke an API key").ok(200, schema_of::<ApiKey>), delete(revoke_key)),
        (Doc::new(M::GET, "/api/v1/bans", "Bans in force (failed-AUTH limits and the operator's)").operator().ok(200, schema_of::<Vec<Ban>>), get(list_bans)),
        (Doc::new(M::POST, "/api/v1/bans", "Ban an address, a network or a login at AUTH").operator().body(schema_of::<NewBanBody>).ok(201, schema_of::<Ban>), post(add_ban)),
        (Doc::new(M::DELETE, "/api/v1/bans/{id}", "Lift a ban").operator().ok(200, schema_of::<Ban>), delete(remove_ban)),
        (Doc::new(M::GET, "/api/v1/audit", "Audit records, newest first").query(schema_of::<AuditParams>).ok(200, schema_of::<Vec<AuditRecord>>), get(audit)),
    ]
}
