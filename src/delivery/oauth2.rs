//! OAuth2 access tokens for XOAUTH2 to a smart host: fetched from the token endpoint,
//! cached, and refreshed before they expire.
//!
//! Two grants are supported (RFC 6749):
//!
//! * `client_credentials` (§4.4), the Microsoft identity platform's app-only shape:
//!   `grant_type=client_credentials&client_id=..&client_secret=..&scope=..`
//!   (e.g. `scope=https://outlook.office365.com/.default`);
//! * `refresh_token` (§6), Google's shape for a delegated mailbox:
//!   `grant_type=refresh_token&refresh_token=..&client_id=..[&client_secret=..][&scope=..]`;
//! * `jwt_bearer` (RFC 7523 §2.1), Google's service-account shape (domain-wide delegation):
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`, the JWT
//!   signed RS256 with the service account's key, `iss` its `client_email`, `sub` the
//!   mailbox, `aud` the token URL, valid one hour.
//!
//! The request is an `application/x-www-form-urlencoded` POST (§4.4.2, §6); the answer is
//! JSON with `access_token`, `expires_in` and `token_type` (§5.1) or `error` and
//! `error_description` (§5.2). A token is used until less than max(60 s, 10 % of its
//! lifetime) remains, measured on the injected clock, and dropped at once when the smart
//! host refuses it ([`TokenSource::invalidate`]). Concurrent callers share one fetch.
//!
//! Secrets (client secret, refresh token) are read when a token is fetched, so a rotated
//! secret needs no restart, and they never reach a log or an error message: errors name the
//! token URL and what the endpoint said.

use super::Failure;
use crate::config::delivery::{OAuth2, OAuth2Grant};
use crate::clock::Clock;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The HTTP timeout of one token request (connect, send, receive).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest token response read (real ones are a few kilobytes).
const MAX_RESPONSE: usize = 64 * 1024;
/// The lifetime assumed when the endpoint gives no `expires_in` (RFC 6749 §5.1 makes it
/// RECOMMENDED, not required); a token that dies earlier is refused by the smart host,
/// invalidated and fetched again.
const DEFAULT_LIFETIME: i64 = 3600;
/// A token is refreshed when less than this many seconds remain ...
const MIN_MARGIN: i64 = 60;
/// ... or less than this fraction (1/10) of its lifetime, whichever is larger.
const MARGIN_DIVISOR: i64 = 10;

/// A token in the cache and the moment it must be replaced.
#[derive(Debug, Clone)]
struct Cached {
    access_token: String,
    refresh_at: DateTime<Utc>,
}

/// The access-token supply of one smart host.
pub struct TokenSource {
    config: OAuth2,
    clock: Clock,
    http: Result<reqwest::Client, String>,
    /// The current token; a std mutex so that [`TokenSource::invalidate`] need not wait.
    cache: std::sync::Mutex<Option<Cached>>,
    /// Held while a token is fetched: concurrent callers wait and then use its result.
    fetching: tokio::sync::Mutex<()>,
}

impl TokenSource {
    pub fn new(config: &OAuth2, clock: Clock) -> TokenSource {
        TokenSource {
            config: config.clone(),
            clock,
            http: http_client(),
            cache: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The token endpoint, as configured.
    pub fn token_url(&self) -> &str {
        &self.config.token_url
    }

    /// A valid access token: the cached one while it is fresh, else a newly fetched one.
    pub async fn token(&self) -> Result<String, Failure> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _fetching = self.fetching.lock().await;
        // Another caller may have fetched one while this one waited.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let fetched_at = (self.clock)();
        let response = self.fetch().await?;
        let cached = Cached { refresh_at: refresh_at(fetched_at, response.expires_in), access_token: response.access_token };
        tracing::info!(token_url = %self.config.token_url, expires_in = ?response.expires_in, "fetched an OAuth2 access token");
        *self.lock_cache() = Some(cached.clone());
        Ok(cached.access_token)
    }

    /// Drops the cached token (the smart host refused it): the next [`TokenSource::token`]
    /// fetches a new one.
    pub fn invalidate(&self) {
        *self.lock_cache() = None;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token if it is not due for refresh.
    fn fresh(&self) -> Option<String> {
        let now = (self.clock)();
        self.lock_cache().as_ref().filter(|c| now < c.refresh_at).map(|c| c.access_token.clone())
    }

    /// One request to the token endpoint.
    async fn fetch(&self) -> Result<TokenResponse, Failure> {
        let url = &self.config.token_url;
        let http = self.http.as_ref().map_err(|e| Failure::temporary(format!("cannot fetch an OAuth2 token from {url}: {e}")))?;
        let form = form(&self.config, (self.clock)()).map_err(|e| Failure::temporary(format!("cannot fetch an OAuth2 token from {url}: {e}")))?;
        let mut response = http.post(url).form(&form).send().await.map_err(|e| {
            Failure::temporary(format!("cannot reach the OAuth2 token endpoint {url}: {}", error_chain(&e.without_url())))
        })?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Failure::temporary(format!("the OAuth2 token endpoint {url} broke off its answer: {}", error_chain(&e.without_url())))
        })? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(Failure::temporary(format!("the OAuth2 token endpoint {url} sent an answer over {MAX_RESPONSE} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        parse_response(url, status.as_u16(), &body).map_err(Failure::temporary)
    }
}

/// The HTTP client: rustls (aws-lc-rs, TLS 1.2/1.3) with the system roots, no redirects
/// (the request carries secrets), a 30 s timeout.
fn http_client() -> Result<reqwest::Client, String> {
    let roots = super::tls_client::system_roots()?;
    let tls = super::tls_client::client_config(roots).map_err(|e| format!("TLS configuration: {e}"))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", error_chain(&e)))
}

/// The form fields of the token request; secrets are read now.
fn form(config: &OAuth2, now: DateTime<Utc>) -> Result<Vec<(&'static str, String)>, String> {
    let mut fields = Vec::new();
    match &config.grant {
        OAuth2Grant::JwtBearer { key, subject } => {
            fields.push(("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()));
            fields.push(("assertion", jwt_assertion(&key.read()?, subject, config, now)?));
            return Ok(fields);
        }
        OAuth2Grant::ClientCredentials => fields.push(("grant_type", "client_credentials".to_string())),
        OAuth2Grant::RefreshToken(secret) => {
            fields.push(("grant_type", "refresh_token".to_string()));
            fields.push(("refresh_token", secret.read()?));
        }
    }
    fields.push(("client_id", config.client_id.clone()));
    if let Some(secret) = &config.client_secret {
        fields.push(("client_secret", secret.read()?));
    }
    if let Some(scope) = &config.scope {
        fields.push(("scope", scope.clone()));
    }
    Ok(fields)
}

/// A Google service account's JSON key (the fields used here).
#[derive(serde::Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
}

/// The RS256-signed JWT of the jwt_bearer grant (RFC 7523 §3, Google's claims).
fn jwt_assertion(key_json: &str, subject: &str, config: &OAuth2, now: DateTime<Utc>) -> Result<String, String> {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let key: ServiceAccountKey =
        serde_json::from_str(key_json).map_err(|e| format!("the service account key is not a Google JSON key: {e}"))?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(key.private_key.as_bytes())
        .map_err(|_| "the service account key's private_key is not a PEM private key".to_string())?;
    let iat = now.timestamp();
    let mut claims = serde_json::json!({"iss": key.client_email, "aud": config.token_url, "iat": iat, "exp": iat + 3600});
    if !subject.is_empty() {
        claims["sub"] = subject.into();
    }
    if let Some(scope) = &config.scope {
        claims["scope"] = scope.as_str().into();
    }
    let signing_input = format!("{}.{}", b64(br#"{"alg":"RS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
        signer.update(signing_input.as_bytes())?;
        signer.sign_to_vec()
    };
    let signature = sign().map_err(|e| format!("cannot sign the JWT with the service account key: {e}"))?;
    Ok(format!("{signing_input}.{}", b64(&signature)))
}

/// What a successful token response carries.
#[derive(Debug, PartialEq, Eq)]
struct TokenResponse {
    access_token: String,
    /// Seconds, if the endpoint said.
    expires_in: Option<i64>,
}

#[derive(serde::Deserialize)]
struct RawResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// RFC 6749 §5.1 (success) and §5.2 (error). The error is a sentence naming `url`.
fn parse_response(url: &str, status: u16, body: &[u8]) -> Result<TokenResponse, String> {
    let raw: Option<RawResponse> = serde_json::from_slice(body).ok();
    let ok = (200..300).contains(&status);
    let Some(raw) = raw else {
        let what = if ok { "an answer that is not JSON".to_string() } else { format!("HTTP {status}") };
        return Err(format!("the OAuth2 token endpoint {url} sent {what}: {}", printable(&String::from_utf8_lossy(body))));
    };
    if !ok || raw.error.is_some() {
        let mut text = format!("the OAuth2 token endpoint {url} refused the request: HTTP {status}");
        for part in [raw.error, raw.error_description].into_iter().flatten() {
            text.push_str(": ");
            text.push_str(&printable(&part));
        }
        return Err(text);
    }
    if let Some(kind) = raw.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(format!("the OAuth2 token endpoint {url} issued a {} token; XOAUTH2 needs a Bearer token", printable(kind)));
    }
    let access_token = raw.access_token.filter(|t| !t.is_empty()).ok_or_else(|| format!("the OAuth2 token endpoint {url} answered without an access_token"))?;
    // The token goes into an SMTP command: printable ASCII only.
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the OAuth2 token endpoint {url} issued an access token with characters that cannot be sent over SMTP"));
    }
    // Some endpoints send `"expires_in": "3599"` (a string).
    let expires_in = match raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    Ok(TokenResponse { access_token, expires_in })
}

/// When a token obtained at `at` with `expires_in` seconds to live must be replaced: once
/// less than max(60 s, 10 % of its lifetime) remains.
fn refresh_at(at: DateTime<Utc>, expires_in: Option<i64>) -> DateTime<Utc> {
    let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME).max(0);
    let margin = MIN_MARGIN.max(lifetime / MARGIN_DIVISOR);
    at + chrono::Duration::seconds((lifetime - margin).max(0))
}

/// Endpoint text as shown in logs and queue entries: printable ASCII, bounded.
fn printable(s: &str) -> String {
    s.chars().take(300).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// An error and its causes on one line (`error sending request: connection refused`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("TokenSource").field("token_url", &self.config.token_url).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::delivery::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn t0() -> DateTime<Utc> {
        "2027-06-30T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn refreshes_with_a_margin_of_a_minute_or_a_tenth() {
        assert_eq!(refresh_at(t0(), Some(3600)), t0() + chrono::Duration::seconds(3240));
        assert_eq!(refresh_at(t0(), Some(300)), t0() + chrono::Duration::seconds(240));
        assert_eq!(refresh_at(t0(), Some(30)), t0());
        assert_eq!(refresh_at(t0(), None), t0() + chrono::Duration::seconds(3240));
    }

    #[test]
    fn parses_success_and_error_answers() {
        let url = "https://login.example/token";
        let ok = parse_response(url, 200, br#"{"access_token":"abc","expires_in":"3599","token_type":"Bearer"}"#).unwrap();
        assert_eq!(ok, TokenResponse { access_token: "abc".into(), expires_in: Some(3599) });
        let err = parse_response(url, 401, br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret"}"#)
            .unwrap_err();
        assert_eq!(
            err,
            "the OAuth2 token endpoint https://login.example/token refused the request: HTTP 401: invalid_client: AADSTS7000215: Invalid client secret"
        );
        assert!(parse_response(url, 502, b"<html>bad gateway</html>").unwrap_err().contains("HTTP 502"));
        assert!(parse_response(url, 200, br#"{"access_token":"a","token_type":"mac"}"#).unwrap_err().contains("Bearer"));
        assert!(parse_response(url, 200, br#"{"token_type":"Bearer"}"#).unwrap_err().contains("without an access_token"));
        assert!(parse_response(url, 200, b"{\"access_token\":\"a\\u0001b\"}").is_err());
    }

    #[test]
    fn google_service_account_jwt_is_signed_and_carries_the_claims() {
        use base64::Engine;
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let pem = String::from_utf8(pkey.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("sa.json");
        let json = serde_json::json!({"type": "service_account", "client_email": "mailgate@proj.iam.gserviceaccount.com", "private_key": pem});
        std::fs::write(&key_file, json.to_string()).unwrap();
        let cfg = OAuth2 {
            token_url: "https://oauth2.googleapis.com/token".into(),
            client_id: String::new(),
            client_secret: None,
            scope: Some("https://mail.google.com/".into()),
            grant: OAuth2Grant::JwtBearer { key: Secret::File(key_file), subject: "scanner@example.com".into() },
        };
        let f = form(&cfg, t0()).unwrap();
        assert_eq!(f[0], ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".to_string()));
        assert_eq!(f.len(), 2, "no client_id or secret: {f:?}");
        let jwt = &f[1].1;
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let dec = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap();
        let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(claims["iss"], "mailgate@proj.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "scanner@example.com");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
        assert_eq!(claims["iat"].as_i64().unwrap(), t0().timestamp());
        let mut verifier = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
        verifier.update(format!("{}.{}", parts[0], parts[1]).as_bytes()).unwrap();
        assert!(verifier.verify(&dec(parts[2])).unwrap(), "the signature verifies with the service account's public key");
        std::fs::write(dir.path().join("sa.json"), "{}").unwrap();
        assert!(form(&cfg, t0()).unwrap_err().contains("not a Google JSON key"));
    }

    #[test]
    fn forms_for_microsoft_and_google() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let refresh = dir.path().join("refresh");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::write(&refresh, "1//refresh").unwrap();
        let mut cfg = OAuth2 {
            token_url: "https://login.example/token".into(),
            client_id: "app".into(),
            client_secret: Some(Secret::File(secret)),
            scope: Some("https://outlook.office365.com/.default".into()),
            grant: OAuth2Grant::ClientCredentials,
        };
        let f = form(&cfg, t0()).unwrap();
        assert_eq!(
            f,
            vec![
                ("grant_type", "client_credentials".to_string()),
                ("client_id", "app".into()),
                ("client_secret", "s3cret".into()),
                ("scope", "https://outlook.office365.com/.default".into()),
            ]
        );
        cfg.grant = OAuth2Grant::RefreshToken(Secret::File(refresh));
        cfg.scope = None;
        let f = form(&cfg, t0()).unwrap();
        assert_eq!(f[..3], [("grant_type", "refresh_token".to_string()), ("refresh_token", "1//refresh".into()), ("client_id", "app".into())]);
        cfg.client_secret = Some(Secret::File(dir.path().join("missing")));
        let e = form(&cfg, t0()).unwrap_err();
        assert!(e.contains("missing") && !e.contains("1//refresh"), "{e}");
    }

    /// A token endpoint on 127.0.0.1 answering every request with `answer(n)` (n counts
    /// from 1) after `delay`.
    async fn endpoint(answer: fn(usize) -> (u16, String), delay: Duration) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 4096];
                    // Head and the (small) body: read until the form has arrived.
                    while !String::from_utf8_lossy(&buf).contains("grant_type") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(delay).await;
                    let (status, body) = answer(n);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    fn source(url: &str, clock: Clock) -> TokenSource {
        let cfg = OAuth2 {
            token_url: url.into(),
            client_id: "app".into(),
            client_secret: None,
            scope: None,
            grant: OAuth2Grant::ClientCredentials,
        };
        TokenSource::new(&cfg, clock)
    }

    #[tokio::test]
    async fn caches_shares_one_fetch_and_invalidates() {
        let (url, count) =
            endpoint(|n| (200, format!(r#"{{"access_token":"tok-{n}","expires_in":300,"token_type":"Bearer"}}"#)), Duration::from_millis(100))
                .await;
        let now = Arc::new(std::sync::Mutex::new(t0()));
        let n2 = now.clone();
        let ts = Arc::new(source(&url, Arc::new(move || *n2.lock().unwrap())));
        let (a, b) = tokio::join!(ts.token(), ts.token());
        assert_eq!((a.unwrap(), b.unwrap()), ("tok-1".to_string(), "tok-1".to_string()));
        assert_eq!(count.load(Ordering::SeqCst), 1, "concurrent callers share one fetch");
        *now.lock().unwrap() = t0() + chrono::Duration::seconds(239);
        assert_eq!(ts.token().await.unwrap(), "tok-1");
        *now.lock().unwrap() = t0() + chrono::Duration::seconds(240);
        assert_eq!(ts.token().await.unwrap(), "tok-2");
        ts.invalidate();
        assert_eq!(ts.token().await.unwrap(), "tok-3");
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_name_the_token_url() {
        let (url, _) =
            endpoint(|_| (400, r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#.into()), Duration::ZERO)
                .await;
        let ts = source(&url, Arc::new(t0));
        let f = ts.token().await.unwrap_err();
        assert!(!f.is_permanent());
        assert_eq!(f.reason, format!("the OAuth2 token endpoint {url} refused the request: HTTP 400: invalid_grant: Token has been expired or revoked."));
        // Nothing listens on port 1.
        let f = source("http://127.0.0.1:1/token", Arc::new(t0)).token().await.unwrap_err();
        assert!(f.reason.starts_with("cannot reach the OAuth2 token endpoint http://127.0.0.1:1/token: "), "{}", f.reason);
    }
}
