//! [`MpApps`]' handlers: a login names its app in the path, the other flows follow the
//! app of the bearer token.

use std::{future::Future, pin::Pin};

use axum_core::{body::Body, extract::Request, response::Response};
use http::{HeaderMap, header};

use super::MpApps;
use crate::{
    bearer::Credentials,
    login::{Error, MpAuth},
    response::Responder,
    store::TokenStore,
    user::AuthedUser,
    users::UserStore,
};

/// The future of a handler: axum's handlers are boxed futures too.
type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// How a handler finds the app of a request.
type Pick<T, U> = fn(&MpApps<T, U>, &Request) -> Result<MpAuth<T, U>, Error>;

/// Where WeChat's mini-program pages live: the `Referer` of `wx.request`.
const WECHAT_PAGES: &str = "https://servicewechat.com/";

impl<T: TokenStore, U: UserStore> MpApps<T, U> {
    /// `POST /apps/{app_id}/auth/authorize` (or `POST /auth/authorize`): logs a user
    /// into the app the path names. Mount it at a path ending in
    /// `/apps/{app_id}/auth/authorize`.
    ///
    ///
    /// | route | app |
    /// |---|---|
    /// | `POST /apps/{app_id}/auth/authorize` | the path's; an app id the registry lacks is 404 `unknown_app` |
    /// | `POST /auth/authorize` | the one WeChat's `Referer` names, else the [default app](MpApps::set_default_app), else the only one; with several and neither, 400 |
    /// | `POST /auth/refresh`, `/auth/logout`, `/auth/logout_all`, `/auth/phone`, `GET /auth/devices`, `DELETE /auth/devices/{id}` | the bearer token's (its sku); a token of no app is 401 |
    ///
    /// Why the path: the mini-program knows its app id (`wx.getAccountInfoSync()`), a
    /// route per app can carry its own middleware (limits, logs), and the app is chosen
    /// before the body is read. WeChat's `Referer` on `wx.request`
    /// (`https://servicewechat.com/<appid>/<version>/page-frame.html`) is a hint only: any
    /// client can send any `Referer`. It picks the app for `POST /auth/authorize` when the
    /// path names none, which is safe because WeChat itself checks that the code belongs
    /// to that app (a code of another app is refused, `40029`, and counts against no user),
    /// and a `Referer` that disagrees with the path is logged, never followed.
    ///
    /// ```
    /// use axum::{Router, routing::post};
    /// use mpauthx::{MemoryTokenStore, MpApps, MpAuthConfig, SqliteUserStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let apps = MpApps::new(MemoryTokenStore::new(), SqliteUserStore::open_in_memory().await?);
    /// apps.insert(MpAuthConfig::new("wx1111111111111111", "shop-secret", "shop")?)?;
    /// let app: Router = Router::new()
    ///     .route("/apps/{app_id}/auth/authorize", post(apps.authorize_handler()))
    ///     .route("/auth/authorize", post(apps.authorize_handler()))
    ///     .route("/auth/refresh", post(apps.refresh_handler()))
    ///     .route("/auth/logout", post(apps.logout_handler()));
    /// # Ok(()) }
    /// ```
    pub fn authorize_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(
            |apps, request| apps.login_app(request.uri().path(), request.headers()),
            MpAuth::authorize_handler,
        )
    }

    /// `POST /auth/refresh` for the bearer token's app ([`MpAuth::refresh_handler`]).
    pub fn refresh_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::refresh_handler)
    }

    /// `POST /auth/logout` for the bearer token's app ([`MpAuth::logout_handler`]).
    pub fn logout_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::logout_handler)
    }

    /// `POST /auth/logout_all` for the bearer token's app: every device of the user in
    /// that app ([`logout_person`](Self::logout_person) reaches every app).
    pub fn logout_all_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::logout_all_handler)
    }

    /// `POST /auth/phone` for the bearer token's app ([`MpAuth::phone_handler`]).
    pub fn phone_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::phone_handler)
    }

    /// `GET /auth/devices` for the bearer token's app ([`MpAuth::devices_handler`]).
    pub fn devices_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::devices_handler)
    }

    /// `DELETE /auth/devices/{id}` for the bearer token's app
    /// ([`MpAuth::revoke_device_handler`]).
    pub fn revoke_device_handler(
        &self,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static {
        self.dispatch(Self::token_app, MpAuth::revoke_device_handler)
    }

    /// A handler that finds the request's app with `pick` and hands the request to the
    /// handler `make` builds for it, so that every flow is answered by the app's own.
    fn dispatch<H>(
        &self,
        pick: Pick<T, U>,
        make: fn(&MpAuth<T, U>) -> H,
    ) -> impl Fn(Request) -> HandlerFuture + Clone + Send + Sync + 'static + use<T, U, H>
    where
        H: Fn(Request) -> HandlerFuture + 'static,
    {
        let apps = self.clone();
        move |request| match pick(&apps, &request) {
            Ok(app) => make(&app)(request),
            Err(error) => {
                let response = error.respond(&Responder::default(), Body::from);
                Box::pin(std::future::ready(response))
            }
        }
    }

    /// The app a login is for: the path's, else the `Referer`'s, else the default, else the
    /// only one.
    fn login_app(&self, path: &str, headers: &HeaderMap) -> Result<MpAuth<T, U>, Error> {
        let hinted = hinted_app(headers);
        if let Some(named) = named_app(path) {
            if hinted.is_some_and(|hinted| hinted != named) {
                tracing::info!(
                    app_id = named,
                    referer_app_id = hinted,
                    "a login's Referer names another app than its path; the path wins"
                );
            }
            return self.get(named).ok_or(Error::UnknownApp);
        }
        if let Some(app) = hinted.and_then(|hinted| self.get(hinted)) {
            return Ok(app);
        }
        if let Some(app) = self.default_app() {
            return Ok(app);
        }
        let apps = self.inner.apps.load();
        match apps.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(Error::UnknownApp),
            _ => Err(Error::InvalidRequest(
                "several apps are served here: log in at POST /apps/{app_id}/auth/authorize",
            )),
        }
    }

    /// The app of the request's user (the layer's) or bearer token.
    fn token_app(&self, request: &Request) -> Result<MpAuth<T, U>, Error> {
        let sku = match request.extensions().get::<AuthedUser>() {
            Some(user) => return self.by_sku(user.sku().as_str()).ok_or(Error::InvalidToken),
            None => match Credentials::from_headers(request.headers()) {
                Credentials::Bearer(token) => crate::token::extract_sku(token),
                Credentials::Absent => return Err(Error::MissingToken),
                Credentials::Malformed => return Err(Error::MalformedCredentials),
            },
        };
        sku.and_then(|sku| self.by_sku(sku))
            .ok_or(Error::InvalidToken)
    }
}

/// The app id of a path ending in `/apps/{app_id}/auth/authorize`.
fn named_app(path: &str) -> Option<&str> {
    let mut segments = path.trim_end_matches('/').rsplit('/');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some("authorize"), Some("auth"), Some(app_id), Some("apps")) if !app_id.is_empty() => {
            Some(app_id)
        }
        _ => None,
    }
}

/// The app id WeChat's `Referer` names: `https://servicewechat.com/<appid>/…`.
fn hinted_app(headers: &HeaderMap) -> Option<&str> {
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix(WECHAT_PAGES)?;
    let app_id = rest.split('/').next()?;
    (!app_id.is_empty()).then_some(app_id)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn the_app_is_the_segment_between_apps_and_auth_authorize() {
        assert_eq!(named_app("/apps/wx1/auth/authorize"), Some("wx1"));
        assert_eq!(named_app("/api/v1/apps/wx1/auth/authorize/"), Some("wx1"));
        assert_eq!(named_app("/auth/authorize"), None);
        assert_eq!(named_app("/apps//auth/authorize"), None);
        assert_eq!(named_app("/shops/wx1/auth/authorize"), None);
    }

    #[test]
    fn the_hint_is_the_first_segment_of_a_wechat_page_referer() {
        let hint = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::REFERER, HeaderValue::from_static(value));
            hinted_app(&headers).map(str::to_owned)
        };
        assert_eq!(
            hint("https://servicewechat.com/wx1111111111111111/3/page-frame.html").as_deref(),
            Some("wx1111111111111111")
        );
        assert_eq!(hint("https://example.com/wx1/3/page-frame.html"), None);
        assert_eq!(hint("https://servicewechat.com/"), None);
        assert_eq!(hinted_app(&HeaderMap::new()), None);
    }
}
