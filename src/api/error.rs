//! The API's errors: `{"error": {"code", "message", "field"?}}` with the status that fits,
//! and the extractors that turn bad requests into them (never a panic, never a bare 500).

use crate::ops::OpsError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// An error as the API sends it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The body of every error response.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `busy`, `malformed`,
    /// `invalid`, `too_large`, `unsupported_media_type`, `timeout`, `method_not_allowed`, `internal`.
    pub code: String,
    /// A sentence for the person who sent the request.
    pub message: String,
    /// The request field the error is about (`until`, `networks[1]`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid", message: message.into(), field: (!field.is_empty()).then_some(field) }
    }
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> ApiError {
        match e {
            OpsError::Invalid { field, message } => ApiError::invalid(field, message),
            OpsError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            OpsError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            OpsError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            OpsError::Busy(m) => ApiError::new(StatusCode::CONFLICT, "busy", m),
            OpsError::Failed(m) => {
                tracing::error!(error = %m, "admin API request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, field: self.field } };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer realm=\"mailgate\""));
        }
        r
    }
}

/// A serde error's path (`users[1]`, `until`), if it has one.
fn path_of<E>(e: &serde_path_to_error::Error<E>) -> String {
    let p = e.path().to_string();
    if p == "." { String::new() } else { p }
}

/// A JSON body: at most `[admin] max_body` octets (413), `application/json` (415),
/// well-formed (400), with known fields of the right types (422 naming the field).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let limit = req.extensions().get::<super::BodyLimit>().map_or(64 * 1024, |l| l.0);
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
        if !json {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"));
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the request body is larger than {limit} octets"))
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de);
        if let (Ok(_), Err(e)) = (&value, de.end()) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed", format!("the body is not valid JSON: {e}")));
        }
        match value {
            Ok(v) => Ok(Json(v)),
            Err(e) if e.inner().is_syntax() || e.inner().is_eof() => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed", format!("the body is not valid JSON: {}", e.inner())))
            }
            Err(e) => Err(ApiError::invalid(path_of(&e), e.inner().to_string())),
        }
    }
}

/// Query parameters: known names with values of the right types (422 naming the field).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(q));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let field = path_of(&e);
            let message = match field.as_str() {
                "" => e.inner().to_string(),
                f => format!("query parameter {f}: {}", e.inner()),
            };
            ApiError::invalid(field, message)
        })
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

/// One path parameter, percent-decoded (400 when it is not UTF-8).
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.body_text()))
    }
}
