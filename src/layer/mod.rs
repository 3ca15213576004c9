//! [`MpAuthLayer`]: bearer-token authentication for any tower service over `http`.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use self::accept::Accepted;
#[cfg(feature = "wechat")]
pub(crate) use self::accept::{LiveSku, LiveSkus};
pub use self::{body::ResponseBody, future::ResponseFuture};
use crate::{
    bearer::{self, Presented},
    instruments::{self, Validation},
    response::{RejectionKind, Responder},
    store::TokenStore,
    token::Sku,
    user::{Anonymous, AuthedUser},
};

mod accept;
mod body;
mod future;

/// Authenticates requests by bearer token.
///
/// The layer reads `Authorization: Bearer <token>`, checks the token's shape and sku
/// without I/O, asks the [`TokenStore`] whether it is live (one round trip), and on
/// success inserts an [`AuthedUser`] into the request's extensions. Otherwise it answers
/// itself, per RFC 6750 (see [`AuthRejection`](crate::AuthRejection)), or with a gRPC
/// status for gRPC calls: it never fails the inner service with an error of its own,
/// and a store outage is a 503 (gRPC `UNAVAILABLE`), never a 401.
///
/// ```
/// use axum::{Router, routing::get};
/// use mpauthx::{AuthedUser, MemoryTokenStore, MpAuthLayer, Sku};
///
/// async fn me(user: AuthedUser) -> String {
///     user.open_id().to_owned()
/// }
///
/// let store = MemoryTokenStore::new();
/// let app: Router = Router::new()
///     .route("/me", get(me))
///     .layer(MpAuthLayer::new(store, Sku::new("demo").unwrap()));
/// ```
#[derive(Debug, Clone)]
pub struct MpAuthLayer<T> {
    store: T,
    policy: Arc<Policy>,
}

/// What every request through one layer is checked against.
#[derive(Debug, Clone)]
struct Policy {
    accepted: Accepted,
    optional: bool,
    responder: Arc<Responder>,
}

impl<T: TokenStore> MpAuthLayer<T> {
    /// Authenticates against `store`, accepting only tokens of `sku`.
    pub fn new(store: T, sku: Sku) -> Self {
        Self::accepting(store, Accepted::One(sku))
    }

    /// Authenticates against `store`, accepting the tokens of any of `skus` (several
    /// mini-programs sharing one token store); the request's [`AuthedUser::sku`] says
    /// which. For the apps of an [`MpApps`](crate::MpApps) registry, which may change
    /// at run time, use its [`layer`](crate::MpApps::layer) instead.
    ///
    /// ```
    /// # use mpauthx::{MemoryTokenStore, MpAuthLayer, Sku};
    /// let skus = ["shop", "game"].map(|s| Sku::new(s).unwrap());
    /// let layer = MpAuthLayer::for_skus(MemoryTokenStore::new(), skus);
    /// ```
    pub fn for_skus(store: T, skus: impl IntoIterator<Item = Sku>) -> Self {
        Self::accepting(store, Accepted::Set(skus.into_iter().collect()))
    }

    /// Accepts the skus a registry holds when a request comes, or those of the apps
    /// with the app ids `only` among them.
    #[cfg(feature = "wechat")]
    pub(crate) fn live(store: T, live: Arc<LiveSkus>, only: Option<Arc<[Arc<str>]>>) -> Self {
        Self::accepting(store, Accepted::Live { live, only })
    }

    fn accepting(store: T, accepted: Accepted) -> Self {
        Self {
            store,
            policy: Arc::new(Policy {
                accepted,
                optional: false,
                responder: Arc::default(),
            }),
        }
    }

    /// Answers failures as `responder` says: the layer of an [`MpAuth`](crate::MpAuth)
    /// rejects exactly as its handlers do.
    #[cfg(feature = "wechat")]
    pub(crate) fn with_responder(mut self, responder: Arc<Responder>) -> Self {
        Arc::make_mut(&mut self.policy).responder = responder;
        self
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
        let policy = Arc::make_mut(&mut self.policy);
        policy.responder = Arc::new((*policy.responder).clone().with_realm(realm));
        self
    }

    /// Sets the `Retry-After` of 503 answers, rounded up to whole seconds.
    /// Default: 1 s.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        let policy = Arc::make_mut(&mut self.policy);
        policy.responder = Arc::new((*policy.responder).clone().with_retry_after(after));
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
    type Future = ResponseFuture<S, ReqBody, T::Validation>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let policy = &self.policy;
        let token = match bearer::presented(request.headers()) {
            Presented::Token(token) => policy.accepted.admit(token.sku()).map(|sku| (sku, token)),
            Presented::Other(_) => None,
            Presented::Absent if policy.optional => {
                instruments::validation(Validation::Missing);
                let anonymous = Anonymous(Arc::clone(&policy.responder));
                request.extensions_mut().insert(anonymous);
                return ResponseFuture::call(self.inner.call(request));
            }
            Presented::Absent => {
                return self.reject(RejectionKind::MissingCredentials, &request);
            }
            Presented::Malformed => return self.reject(RejectionKind::InvalidRequest, &request),
        };
        let Some((sku, token)) = token else {
            return self.reject(RejectionKind::InvalidToken, &request);
        };
        // An answer at hand (a cache hit): the inner service, which is ready, is called
        // now, with nothing held across the request.
        if let Some(verdict) = self.store.validate_now(&token) {
            return match future::judge(verdict, &policy.responder) {
                Ok(()) => {
                    let user = AuthedUser::new(sku, token.open_id());
                    request.extensions_mut().insert(user);
                    ResponseFuture::call(self.inner.call(request))
                }
                Err(rejection) => ResponseFuture::reject(rejection.for_request(request.headers())),
            };
        }
        let user = AuthedUser::new(sku, token.open_id());
        let check = self.store.validate(&token);
        // The inner service was driven to readiness, its clone maybe not: keep the ready
        // one for this request (see tower's "Be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::check(
            check,
            inner,
            request,
            user,
            Arc::clone(&self.policy.responder),
        )
    }
}

impl<S, T> MpAuthService<S, T> {
    fn reject<ReqBody, F>(
        &self,
        kind: RejectionKind,
        request: &Request<ReqBody>,
    ) -> ResponseFuture<S, ReqBody, F>
    where
        S: Service<Request<ReqBody>>,
    {
        tracing::debug!(rejection = kind.oauth_error(), "request rejected");
        instruments::validation(match kind {
            RejectionKind::MissingCredentials => Validation::Missing,
            RejectionKind::InvalidRequest => Validation::Malformed,
            _ => Validation::Invalid,
        });
        let rejection = self.policy.responder.reject(kind);
        ResponseFuture::reject(rejection.for_request(request.headers()))
    }
}
