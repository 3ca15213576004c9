//! [`AuthedUser`]: who made the request, as [`MpAuthLayer`](crate::MpAuthLayer) found.

use std::sync::Arc;

use arrayvec::ArrayString;

use crate::{
    response::Responder,
    token::{MAX_OPEN_ID_LEN, Sku},
};

/// The user behind a request's valid token; a request extension set by
/// [`MpAuthLayer`](crate::MpAuthLayer). Cloning is cheap: an id up to 64 bytes (every
/// id a token can carry) is kept inline, a longer one shared.
///
/// With the `axum` feature (on by default) it is an extractor: take `AuthedUser` in a
/// handler to require a user, or `Option<AuthedUser>` behind a layer built
/// [`with_optional(true)`](crate::MpAuthLayer::with_optional) to accept anonymous
/// requests too. Without the layer on the route, both answer 500 and say so.
///
/// ```
/// use axum::{Router, routing::get};
/// use mpauthx::{AuthedUser, MemoryTokenStore, MpAuthLayer, Sku};
///
/// async fn greet(user: Option<AuthedUser>) -> String {
///     match user {
///         Some(user) => format!("hello, {}", user.open_id()),
///         None => "hello, stranger".to_owned(),
///     }
/// }
///
/// let layer = MpAuthLayer::new(MemoryTokenStore::new(), Sku::new("demo").unwrap())
///     .with_optional(true);
/// let app: Router = Router::new().route("/", get(greet)).layer(layer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthedUser {
    open_id: Id,
    sku: Sku,
}

/// An openid, kept inline when it fits a token (64 bytes, as every id a token can carry
/// does): the layer builds one per request, and this way allocates nothing for it.
#[derive(Clone)]
enum Id {
    Inline(ArrayString<MAX_OPEN_ID_LEN>),
    Shared(Arc<str>),
}

impl Id {
    fn new(id: &str) -> Self {
        ArrayString::from(id).map_or_else(|_| Self::Shared(Arc::from(id)), Self::Inline)
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Inline(id) => id.as_str(),
            Self::Shared(id) => id,
        }
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl std::hash::Hash for Id {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AuthedUser {
    /// A user, e.g. to put in a request's extensions in a test.
    pub fn new(sku: Sku, open_id: impl AsRef<str>) -> Self {
        Self {
            open_id: Id::new(open_id.as_ref()),
            sku,
        }
    }

    /// The user's openid (or unionid, if the application identifies users by it).
    pub fn open_id(&self) -> &str {
        self.open_id.as_str()
    }

    /// The sku the token was issued under: which app the user is of, when one backend
    /// serves several ([`MpApps::by_sku`](crate::MpApps::by_sku) finds it).
    pub fn sku(&self) -> &Sku {
        &self.sku
    }
}

/// Set by an optional [`MpAuthLayer`](crate::MpAuthLayer) on a request without
/// credentials: tells "no user" apart from "no layer".
#[derive(Debug, Clone)]
// Read only by the axum extractors; without them the marker is still set, harmlessly.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) struct Anonymous(pub(crate) Arc<Responder>);

#[cfg(feature = "axum")]
mod axum_impls {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::{Anonymous, AuthedUser};
    use crate::response::{AuthRejection, RejectionKind};

    fn missing(parts: &Parts) -> AuthRejection {
        match parts.extensions.get::<Anonymous>() {
            Some(Anonymous(responder)) => responder
                .reject(RejectionKind::MissingCredentials)
                .for_request(&parts.headers),
            None => {
                tracing::error!("`AuthedUser` extracted on a route without `MpAuthLayer`");
                AuthRejection::new(RejectionKind::MissingLayer).for_request(&parts.headers)
            }
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AuthedUser {
        type Rejection = AuthRejection;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            match parts.extensions.get::<AuthedUser>() {
                Some(user) => Ok(user.clone()),
                None => {
                    let rejection = missing(parts);
                    tracing::trace!(
                        rejection = rejection.kind().oauth_error(),
                        "rejecting request"
                    );
                    Err(rejection)
                }
            }
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for AuthedUser {
        type Rejection = AuthRejection;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            if let Some(user) = parts.extensions.get::<AuthedUser>() {
                return Ok(Some(user.clone()));
            }
            if parts.extensions.get::<Anonymous>().is_some() {
                return Ok(None);
            }
            Err(missing(parts))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_inline_or_shared_read_alike() {
        let sku = Sku::new("demo").unwrap();
        let short = AuthedUser::new(sku.clone(), "o-ann");
        assert!(matches!(short.open_id, Id::Inline(_)));
        assert_eq!(short.open_id(), "o-ann");
        let long = "x".repeat(MAX_OPEN_ID_LEN + 1);
        let shared = AuthedUser::new(sku.clone(), &long);
        assert!(matches!(shared.open_id, Id::Shared(_)));
        assert_eq!(shared.open_id(), long);
        assert_eq!(short, AuthedUser::new(sku, String::from("o-ann")));
        assert_eq!(
            format!("{short:?}"),
            r#"AuthedUser { open_id: "o-ann", sku: "demo" }"#
        );
    }
}
