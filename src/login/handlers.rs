//! HTTP handlers for the login contract, usable as axum handlers.
//!
//! | route | request | answer |
//! |---|---|---|
//! | `POST /auth/authorize` | JSON [`AuthorizeRequest`] | 200 `{"token", "token_type": "Bearer", "expires_in"}` |
//! | `POST /auth/refresh` | `Authorization: Bearer <token>` | 200, a new token; the old one is revoked |
//! | `POST /auth/logout` | `Authorization: Bearer <token>` | 204, the token revoked |
//! | `POST /auth/logout_all` | `Authorization: Bearer <token>` | 204, every token of the user revoked |
//! | `GET /auth/devices` | `Authorization: Bearer <token>` | 200 `{"devices": [{"id", "device", "issued_at", "expires_at", "current"}]}`, the user's live tokens (times in seconds since the epoch) |
//! | `DELETE /auth/devices/{id}` | `Authorization: Bearer <token>` | 204, that device signed out; 404 `unknown_device` for another user's or an unknown id |
//! | `POST /auth/phone` | `Authorization: Bearer <token>`, JSON `{"code": "<phone code>"}` | 200 `{"phone_number", "pure_phone_number", "country_code"}`, the phone bound to the user |
//!
//! A login that binds a phone (`phone_code` or `phone` in its body) also answers
//! `"phone": {"phone_number", "pure_phone_number", "country_code"}`.
//!
//! Errors are [`Error`] responses: JSON `{"error", "error_description", "code"}` with a
//! fitting status; failures of the bearer token are answered exactly as
//! [`MpAuthLayer`](crate::MpAuthLayer) answers them. Bodies over [`MAX_BODY_BYTES`] are
//! refused with 413.
//!
//! ```
//! use axum::{Router, routing::post};
//! use mpauthx::{MemoryTokenStore, MpAuth, MpAuthConfig, SqliteUserStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MpAuthConfig::new("wx-app-id", "app-secret", "demo")?;
//! let users = SqliteUserStore::open_in_memory().await?;
//! let auth = MpAuth::new(config, MemoryTokenStore::new(), users);
//! let app: Router = Router::new()
//!     .route("/auth/authorize", post(auth.authorize_handler()))
//!     .route("/auth/refresh", post(auth.refresh_handler()))
//!     .route("/auth/logout", post(auth.logout_handler()))
//!     .route("/auth/logout_all", post(auth.logout_all_handler()))
//!     .route("/auth/phone", post(auth.phone_handler()));
//! # Ok(()) }
//! ```
//!
//! [`AuthorizeRequest`]: crate::AuthorizeRequest
//! [`Error`]: crate::Error

use std::{future::Future, pin::Pin};

use axum_core::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Deserialize;

use super::{AuthorizeRequest, Authorized, Error, MpAuth};
use crate::{
    bearer::Credentials, response::json_response, store::TokenStore, user::AuthedUser,
    users::UserStore, wechat::PhoneCode,
};

/// The largest request body accepted, in bytes: an `encryptedData` is a few KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The future of a handler: axum's handlers are boxed futures too.
type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

impl<T: TokenStore, U: UserStore> MpAuth<T, U> {
    /// `POST /auth/authorize`: logs a user in.
    pub fn authorize_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let (parts, body) = request.into_parts();
            let login: AuthorizeRequest = read_json(&parts.headers, body, MAX_BODY_BYTES).await?;
            auth.authorize_from(&parts, &login)
                .await
                .map(token_response)
        })
    }

    /// `POST /auth/refresh`: rotates the bearer token.
    pub fn refresh_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let token = bearer_token(request.headers())?;
            auth.refresh(&token).await.map(token_response)
        })
    }

    /// `POST /auth/logout`: revokes the bearer token.
    pub fn logout_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let token = bearer_token(request.headers())?;
            auth.logout(&token).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
    }

    /// `POST /auth/logout_all`: revokes every token of the bearer token's user.
    pub fn logout_all_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let token = bearer_token(request.headers())?;
            let user = auth.validate(&token).await?;
            auth.logout_all(user.open_id()).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        })
    }

    /// `POST /auth/phone`: binds the phone of a phone code to the bearer token's user
    /// (see [`MpAuth::bind_phone`]). Behind [`MpAuthLayer`](crate::MpAuthLayer) it
    /// takes the user the layer found; mounted without it, it checks the token itself.
    pub fn phone_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let (parts, body) = request.into_parts();
            let user = match parts.extensions.get::<AuthedUser>() {
                Some(user) => user.clone(),
                None => auth.validate(&bearer_token(&parts.headers)?).await?,
            };
            let request: PhoneRequest = read_json(&parts.headers, body, MAX_BODY_BYTES).await?;
            let code = request.code.unwrap_or_default();
            let phone = auth.bind_phone(&user, PhoneCode::new(code)).await?;
            let body = serde_json::to_string(&phone).expect("a phone number serializes");
            Ok(json_response(StatusCode::OK, Bytes::from(body), Body::from))
        })
    }

    /// `GET /auth/devices`: the bearer token's user's live tokens (see
    /// [`MpAuth::devices`]), the one making the request marked `current`. Behind
    /// [`MpAuthLayer`](crate::MpAuthLayer) it takes the user the layer found; mounted
    /// without it, it checks the token itself.
    pub fn devices_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let (user, token) = caller(&auth, request.headers(), request.extensions()).await?;
            let current = crate::token::ParsedToken::parse(&token)
                .map(|t| t.hash())
                .ok();
            let devices: Vec<_> = auth
                .devices(&user)
                .await?
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "id": d.hash.id().as_str(),
                        "device": d.device,
                        "issued_at": d.issued_at_ms / 1000,
                        "expires_at": d.expires_at_ms / 1000,
                        "current": Some(d.hash) == current,
                    })
                })
                .collect();
            let body = serde_json::json!({ "devices": devices }).to_string();
            Ok(json_response(StatusCode::OK, Bytes::from(body), Body::from))
        })
    }

    /// `DELETE /auth/devices/{id}`: signs out one of the bearer token's user's devices
    /// by the id `GET /auth/devices` lists (the last segment of the path): 204, or 404
    /// `unknown_device` for another user's or an unknown id, with nothing revoked.
    pub fn revoke_device_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U> {
        self.handler(|auth, request| async move {
            let (user, _) = caller(&auth, request.headers(), request.extensions()).await?;
            let id = request.uri().path().rsplit('/').next().unwrap_or_default();
            if auth.revoke_device(&user, id).await? {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(Error::UnknownDevice)
            }
        })
    }

    fn handler<F, Fut>(
        &self,
        flow: F,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U, F, Fut>
    where
        F: Fn(Self, Request) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response, Error>> + Send + 'static,
    {
        let auth = self.clone();
        move |request| {
            let auth = auth.clone();
            let flow = flow(auth.clone(), request);
            Box::pin(async move {
                flow.await
                    .unwrap_or_else(|error| error.respond(auth.responder(), Body::from))
            })
        }
    }
}

/// The user making the request and their token: the layer's user when it ran, else
/// the token checked here.
async fn caller<T: TokenStore, U: UserStore>(
    auth: &MpAuth<T, U>,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<(AuthedUser, String), Error> {
    let token = bearer_token(headers)?;
    match extensions.get::<AuthedUser>() {
        Some(user) => Ok((user.clone(), token)),
        None => Ok((auth.validate(&token).await?, token)),
    }
}

/// The bearer token, owned: the request is consumed by the flows that follow.
fn bearer_token(headers: &HeaderMap) -> Result<String, Error> {
    match Credentials::from_headers(headers) {
        Credentials::Bearer(token) => Ok(token.to_owned()),
        Credentials::Absent => Err(Error::MissingToken),
        Credentials::Malformed => Err(Error::MalformedCredentials),
    }
}

/// Why a JSON request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Over the limit, declared or streamed.
    TooLarge,
    /// The body could not be read.
    Unreadable,
    /// Not JSON of the expected shape.
    NotJson,
}

/// Reads a JSON body of at most `limit` bytes, refusing a larger declared
/// `Content-Length` before reading anything: the login handlers' and the simulator's.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                BodyError::TooLarge
            } else {
                BodyError::Unreadable
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|_| BodyError::NotJson)
}

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Error::PayloadTooLarge,
            BodyError::Unreadable => Error::InvalidRequest("could not read the request body"),
            BodyError::NotJson => {
                Error::InvalidRequest("the request body is not the expected JSON")
            }
        }
    }
}

/// The body of `POST /auth/phone`.
#[derive(Deserialize)]
struct PhoneRequest {
    code: Option<String>,
}

fn token_response(authorized: Authorized) -> Response {
    let mut body = serde_json::json!({
        "token": authorized.token.expose(),
        "token_type": "Bearer",
        "expires_in": authorized.expires_in,
    });
    if let Some(phone) = &authorized.phone {
        body["phone"] = serde_json::to_value(phone).expect("a phone number serializes");
    }
    json_response(StatusCode::OK, Bytes::from(body.to_string()), Body::from)
}
