//! [`MpAuthLayer`]: bearer-token authentication for any tower service over `http`.
//!
//! The layer reads `Authorization: Bearer <token>`, checks the token's shape and sku
//! without I/O, asks the [`TokenStore`] whether it is live (one round trip), and on
//! success inserts an [`AuthedUser`] into the request's extensions. Otherwise it answers
//! itself, per RFC 6750 (see [`crate::rejection`]): it never fails the inner service
//! with an error of its own, and a store outage is a 503, never a 401.
//!
//! ```
//! use axum::{Router, routing::get};
//! use mpauthx::{AuthedUser, MemoryTokenStore, MpAuthLayer, Sku};
//!
//! async fn me(user: AuthedUser) -> String {
//!     user.open_id().to_owned()
//! }
//!
//! let store = MemoryTokenStore::new();
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .layer(MpAuthLayer::new(store, Sku::new("demo").unwrap()));
//! ```

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use self::header::Credentials;
use crate::{
    config::Sku,
    extract::{Anonymous, AuthedUser},
    rejection::{Challenges, DEFAULT_REALM, RejectionKind},
    store::TokenStore,
    token::ParsedToken,
};

mod body;
pub mod future;
pub(crate) mod header;

pub use self::body::ResponseBody;
use self::future::ResponseFuture;

/// Authenticates requests by bearer token; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct MpAuthLayer<T> {
    store: T,
    policy: Arc<Policy>,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    sku: Sku,
    optional: bool,
    challenges: Challenges,
    retry_after: HeaderValue,
}

impl Policy {
    pub(crate) fn reject(&self, kind: RejectionKind) -> crate::AuthRejection {
        self.challenges.reject(kind, &self.retry_after)
    }
}

impl<T: TokenStore> MpAuthLayer<T> {
    /// Authenticates against `store`, accepting only tokens of `sku`.
    pub fn new(store: T, sku: Sku) -> Self {
        Self {
            store,
            policy: Arc::new(Policy {
                sku,
                optional: false,
                challenges: Challenges::new(DEFAULT_REALM),
                retry_after: HeaderValue::from_static("1"),
            }),
        }
    }

    /// Lets requests without bearer credentials through, so that handlers can take
    /// `Option<AuthedUser>`. Default: off.
    ///
    /// Only a *missing* token (no `Authorization` header, or one of another scheme)
    /// passes; a malformed header is still a 400 and an invalid token still a 401, so a
    /// client with a stale token learns that it must log in again.
    ///
    /// ```
    /// # use mpauthx::{MemoryTokenStore, MpAuthLayer, Sku};
    /// let layer = MpAuthLayer::new(MemoryTokenStore::new(), Sku::new("demo").unwrap())
    ///     .with_optional(true);
    /// ```
    pub fn with_optional(mut self, optional: bool) -> Self {
        Arc::make_mut(&mut self.policy).optional = optional;
        self
    }

    /// Sets the `realm` of `WWW-Authenticate` challenges. Default: `mpauthx`.
    ///
    /// # Panics
    /// If `realm` is not 1 to 64 visible ASCII characters without `"` or `\`.
    pub fn with_realm(mut self, realm: &str) -> Self {
        Arc::make_mut(&mut self.policy).challenges = Challenges::new(realm);
        self
    }

    /// Sets the `Retry-After` of 503 answers, rounded up to whole seconds.
    /// Default: 1 s.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        Arc::make_mut(&mut self.policy).retry_after = HeaderValue::from(seconds.max(1));
        self
    }
}

impl<S, T: TokenStore> Layer<S> for MpAuthLayer<T> {
    type Service = MpAuthService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        MpAuthService {
            inner,
            store: self.store.clone(),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service [`MpAuthLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct MpAuthService<S, T> {
    inner: S,
    store: T,
    policy: Arc<Policy>,
}

impl<S, T: TokenStore> MpAuthService<S, T> {
    /// A layer with the same settings as [`MpAuthLayer::new`].
    pub fn layer(store: T, sku: Sku) -> MpAuthLayer<T> {
        MpAuthLayer::new(store, sku)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for MpAuthService<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    T: TokenStore,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let policy = &self.policy;
        let token = match header::bearer(request.headers()) {
            Credentials::Bearer(text) => ParsedToken::parse(text)
                .ok()
                .filter(|token| policy.sku == *token.sku()),
            Credentials::Absent if policy.optional => {
                request
                    .extensions_mut()
                    .insert(Anonymous(Arc::clone(policy)));
                return ResponseFuture::call(self.inner.call(request));
            }
            Credentials::Absent => {
                return self.reject(RejectionKind::MissingCredentials);
            }
            Credentials::Malformed => return self.reject(RejectionKind::InvalidRequest),
        };
        let Some(token) = token else {
            return self.reject(RejectionKind::InvalidToken);
        };
        let user = AuthedUser::new(policy.sku.clone(), token.open_id());
        let check = self.store.validate(&token);
        // The inner service was driven to readiness, its clone maybe not: keep the ready
        // one for this request (see tower's "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::check(
            Box::pin(check),
            inner,
            request,
            user,
            Arc::clone(&self.policy),
        )
    }
}

impl<S, T> MpAuthService<S, T> {
    fn reject<ReqBody>(&self, kind: RejectionKind) -> ResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        tracing::debug!(rejection = kind.error(), "request rejected");
        ResponseFuture::reject(self.policy.reject(kind))
    }
}
