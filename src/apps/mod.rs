//! [`MpApps`]: several mini-programs in one backend, and one person across them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{
    layer::{LiveSku, LiveSkus, MpAuthLayer},
    login::{Error, MpAuth, MpAuthBuilder, MpAuthConfig},
    store::{DEFAULT_SIGN_OUT_NOTICE, SignOutReason, TokenInfo, TokenStore},
    user::AuthedUser,
    users::{User, UserStore},
};

#[cfg(feature = "axum")]
mod handlers;

/// An app could not be added to an [`MpApps`], or a layer asked for an app it does not
/// hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Another app id has this sku, or had it since the registry was made: a token
    /// names its app by its sku, so the other app's tokens, which may still be live,
    /// would pass as this app's.
    #[error("the sku `{0}` is, or was, another app's (its tokens may still be live)")]
    SkuTaken(String),
    /// No app has this app id.
    #[error("no app has the app id `{0}`")]
    UnknownApp(String),
}

/// The mini-programs one backend serves, sharing one token store and one user store.
/// Cheap to clone: clones share the registry.
///
/// Each app is an [`MpAuth`] (its app id and secret, sku, token lifetime, device limit,
/// throttle and access token) over the stores the registry shares. A token names its
/// app by its sku, so one [`layer`](MpApps::layer) accepts the tokens of every app (or
/// [of some](MpApps::layer_for)) and [`AuthedUser::sku`] says whose a request is. Apps
/// are added, replaced and removed while the server runs; reading the registry on a
/// request takes no lock. The handlers ([`authorize_handler`](MpApps::authorize_handler)
/// and the others) route each flow to its app.
///
/// ```
/// use mpauthx::{AuthedUser, MemoryTokenStore, MpApps, MpAuthConfig, SqliteUserStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let users = SqliteUserStore::open_in_memory().await?;
/// let apps = MpApps::new(MemoryTokenStore::new(), users);
/// apps.insert(MpAuthConfig::new("wx1111111111111111", "shop-secret", "shop")?)?;
/// apps.insert(MpAuthConfig::new("wx2222222222222222", "game-secret", "game")?)?;
///
/// let everyone = apps.layer(); // tokens of either app
/// let shoppers = apps.layer_for(["wx1111111111111111"])?; // the shop's only
/// assert_eq!(apps.app_ids(), ["wx1111111111111111", "wx2222222222222222"]);
///
/// // Removed, the game's tokens are refused by both layers at once.
/// apps.remove("wx2222222222222222");
/// # Ok(()) }
/// ```
///
/// Users are kept per (app id, openid) and linked into persons by unionid, so
/// [`person`](Self::person), [`person_devices`](Self::person_devices) and
/// [`logout_person`](Self::logout_person) reach one person in every app.
pub struct MpApps<T, U> {
    inner: Arc<Registry<T, U>>,
}

/// What every clone of one [`MpApps`] shares.
struct Registry<T, U> {
    tokens: T,
    users: U,
    /// The apps, in app id order: swapped whole by a writer, read without a lock.
    apps: ArcSwap<Vec<MpAuth<T, U>>>,
    /// Their skus, for the layers (which know nothing of users).
    skus: Arc<LiveSkus>,
    /// The app of a login that names none, if set.
    default_app: ArcSwapOption<String>,
    /// Serializes writers, so that no change is lost between a load and a store, and
    /// holds the app id each sku was first given to.
    writer: Mutex<Owners>,
}

/// The app id of every sku an app of the registry has had, by sku: a sku stays its
/// first app's, whatever is removed, as long as the registry lives.
type Owners = HashMap<String, String>;

impl<T, U> Clone for MpApps<T, U> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: std::fmt::Debug, U: std::fmt::Debug> std::fmt::Debug for MpApps<T, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Each app's `Debug` redacts its secret.
        f.debug_struct("MpApps")
            .field("apps", &**self.inner.apps.load())
            .field("tokens", &self.inner.tokens)
            .field("users", &self.inner.users)
            .finish()
    }
}

impl<T: TokenStore, U: UserStore> MpApps<T, U> {
    /// A registry with no app yet, over the stores every app will share.
    pub fn new(tokens: T, users: U) -> Self {
        Self {
            inner: Arc::new(Registry {
                tokens,
                users,
                apps: ArcSwap::default(),
                skus: Arc::default(),
                default_app: ArcSwapOption::empty(),
                writer: Mutex::new(Owners::new()),
            }),
        }
    }

    /// A builder for an app on this registry's stores, for settings beyond the
    /// configuration (a login throttle, a shared access token, the realm); add what it
    /// builds with [`add`](Self::add).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use mpauthx::{LoginThrottle, MemoryRateLimiter, MemoryTokenStore, MpApps, MpAuthConfig, RateLimit, SqliteUserStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let apps = MpApps::new(MemoryTokenStore::new(), SqliteUserStore::open_in_memory().await?);
    /// let throttle = LoginThrottle::new(MemoryRateLimiter::new())
    ///     .per_user(RateLimit::new(10, Duration::from_secs(60))?);
    /// let config = MpAuthConfig::new("wx1111111111111111", "shop-secret", "shop")?;
    /// apps.add(apps.app(config).with_login_throttle(throttle).build())?;
    /// # Ok(()) }
    /// ```
    pub fn app(&self, config: MpAuthConfig) -> MpAuthBuilder<T, U> {
        MpAuth::builder(config, self.inner.tokens.clone(), self.inner.users.clone())
    }

    /// Adds an app with default settings; see [`add`](Self::add).
    pub fn insert(&self, config: MpAuthConfig) -> Result<MpAuth<T, U>, AppError> {
        let auth = self.app(config).build();
        self.add(auth.clone())?;
        Ok(auth)
    }

    /// Adds an app, or replaces the app with its app id (a new secret, other limits),
    /// returning the one it replaced: requests that follow use the new one, requests
    /// under way finish with the old. `auth` should be built on this registry's stores
    /// ([`app`](Self::app)); one built on others would keep its users and tokens
    /// where the registry's person calls do not look.
    ///
    /// A sku belongs to the first app id given it, for as long as the registry lives,
    /// even after that app is removed: its tokens carry the sku, and may still be live.
    /// Re-adding a removed app with its old sku accepts its unexpired tokens again;
    /// give it a new sku to start afresh. Across restarts the registry cannot know
    /// which app had a sku: never give a sku to another app id while the first app's
    /// tokens may be live.
    ///
    /// # Errors
    /// [`AppError::SkuTaken`] if another app id has, or had, its sku.
    pub fn add(&self, auth: MpAuth<T, U>) -> Result<Option<MpAuth<T, U>>, AppError> {
        let mut owners = self.lock_writer();
        let app_id = auth.config().app_id().to_owned();
        let app_id = app_id.as_str();
        let sku = auth.config().sku().as_str();
        match owners.get(sku) {
            Some(owner) if owner != app_id => return Err(AppError::SkuTaken(sku.to_owned())),
            Some(_) => {}
            None => {
                owners.insert(sku.to_owned(), app_id.to_owned());
            }
        }
        let mut apps = Vec::clone(&self.inner.apps.load());
        let replaced = match apps.iter().position(|a| a.config().app_id() == app_id) {
            Some(i) => Some(std::mem::replace(&mut apps[i], auth)),
            None => {
                apps.push(auth);
                apps.sort_by(|a, b| a.config().app_id().cmp(b.config().app_id()));
                None
            }
        };
        tracing::info!(
            app_id,
            replaced = replaced.is_some(),
            apps = apps.len(),
            "app added"
        );
        self.publish(apps);
        Ok(replaced)
    }

    /// Removes an app: from the next request on, every layer of this registry refuses
    /// its tokens (401) and its routes answer 404 `unknown_app`; if it was the
    /// [default app](Self::set_default_app), there is none. Its tokens and users
    /// stay in the stores. Returns the app, if there was one.
    pub fn remove(&self, app_id: &str) -> Option<MpAuth<T, U>> {
        let _owners = self.lock_writer();
        let mut apps = Vec::clone(&self.inner.apps.load());
        let i = apps.iter().position(|a| a.config().app_id() == app_id)?;
        let removed = apps.remove(i);
        tracing::info!(app_id, apps = apps.len(), "app removed");
        self.publish(apps);
        if self
            .inner
            .default_app
            .load()
            .as_deref()
            .is_some_and(|default| default == app_id)
        {
            self.inner.default_app.store(None);
        }
        Some(removed)
    }

    /// Makes `app_id` the app of a login whose path names none (`POST /auth/authorize`)
    /// and whose `Referer` names no app of the registry: the app a backend served
    /// before it served several, so that its mini-program needs no change. `None`:
    /// no default, and such a login is 400 while there are several apps. Removing the
    /// app removes the default with it (re-adding the app does not restore it).
    ///
    /// # Errors
    /// [`AppError::UnknownApp`] if the registry does not hold `app_id`.
    pub fn set_default_app(&self, app_id: Option<&str>) -> Result<(), AppError> {
        // Under the writers' lock: an app removed meanwhile cannot become the default.
        let _owners = self.lock_writer();
        if let Some(app_id) = app_id
            && self.get(app_id).is_none()
        {
            return Err(AppError::UnknownApp(app_id.to_owned()));
        }
        self.inner
            .default_app
            .store(app_id.map(|id| Arc::new(id.to_owned())));
        Ok(())
    }

    /// The app of a login that names none, if there is one.
    pub fn default_app(&self) -> Option<MpAuth<T, U>> {
        let id = self.inner.default_app.load_full()?;
        self.get(&id)
    }

    /// The app with this app id.
    pub fn get(&self, app_id: &str) -> Option<MpAuth<T, U>> {
        self.inner
            .apps
            .load()
            .iter()
            .find(|a| a.config().app_id() == app_id)
            .cloned()
    }

    /// The app whose tokens carry this sku: the app of an [`AuthedUser`].
    pub fn by_sku(&self, sku: &str) -> Option<MpAuth<T, U>> {
        self.inner
            .apps
            .load()
            .iter()
            .find(|a| *a.config().sku() == *sku)
            .cloned()
    }

    /// The app ids, in order.
    pub fn app_ids(&self) -> Vec<String> {
        self.inner
            .apps
            .load()
            .iter()
            .map(|a| a.config().app_id().to_owned())
            .collect()
    }

    /// How many apps there are.
    pub fn len(&self) -> usize {
        self.inner.apps.load().len()
    }

    /// Whether there is no app.
    pub fn is_empty(&self) -> bool {
        self.inner.apps.load().is_empty()
    }

    /// The shared token store.
    pub fn tokens(&self) -> &T {
        &self.inner.tokens
    }

    /// The shared user store.
    pub fn users(&self) -> &U {
        &self.inner.users
    }

    /// A layer accepting the tokens of every app the registry holds when a request
    /// comes: apps added later are accepted, removed ones refused.
    pub fn layer(&self) -> MpAuthLayer<T> {
        MpAuthLayer::live(
            self.inner.tokens.clone(),
            Arc::clone(&self.inner.skus),
            None,
        )
    }

    /// A layer accepting the tokens of the named apps only (a route for one
    /// mini-program): another app's token is 401 `invalid_token`. The apps are looked
    /// up by app id on each request: one removed later is refused from then on, and
    /// one replaced with a new sku is accepted under the new sku.
    ///
    /// # Errors
    /// [`AppError::UnknownApp`] for an app id the registry does not hold.
    pub fn layer_for<'a>(
        &self,
        app_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<MpAuthLayer<T>, AppError> {
        let only = app_ids
            .into_iter()
            .map(|id| match self.get(id) {
                Some(_) => Ok(Arc::from(id)),
                None => Err(AppError::UnknownApp(id.to_owned())),
            })
            .collect::<Result<Arc<[Arc<str>]>, _>>()?;
        Ok(MpAuthLayer::live(
            self.inner.tokens.clone(),
            Arc::clone(&self.inner.skus),
            Some(only),
        ))
    }

    /// The stored user behind a request's [`AuthedUser`], in the app its token is of;
    /// `None` if the app is gone or the user was deleted.
    pub async fn user(&self, user: &AuthedUser) -> Result<Option<User>, Error> {
        let Some(app) = self.by_sku(user.sku().as_str()) else {
            return Ok(None);
        };
        Ok(self
            .inner
            .users
            .get(app.config().app_id(), user.open_id())
            .await?)
    }

    /// Every record of a person, one per app, ordered by app id ([`User::person_id`]).
    pub async fn person(&self, person_id: &str) -> Result<Vec<User>, Error> {
        Ok(self.inner.users.person(person_id).await?)
    }

    /// A person's live tokens in every app the registry holds, by app id: each app's
    /// [`MpAuth::devices`].
    pub async fn person_devices(
        &self,
        person_id: &str,
    ) -> Result<Vec<(String, Vec<TokenInfo>)>, Error> {
        let mut all = Vec::new();
        for (app, user) in self.records(person_id).await? {
            let devices = app.devices(&user).await?;
            all.push((app.config().app_id().to_owned(), devices));
        }
        Ok(all)
    }

    /// Logs a person out on every device in every app the registry holds; returns how
    /// many tokens were live.
    pub async fn logout_person(&self, person_id: &str) -> Result<usize, Error> {
        let mut revoked = 0;
        for (app, user) in self.records(person_id).await? {
            revoked += app.logout_all(user.open_id()).await?;
        }
        tracing::info!(
            person = person_id,
            tokens = revoked,
            "person logged out in every app"
        );
        Ok(revoked)
    }

    /// Signs a person out in every app for `reason` ([`MpAuth::sign_out`]: their
    /// clients learn why); returns how many tokens were live.
    pub async fn sign_out_person(
        &self,
        person_id: &str,
        reason: &SignOutReason,
    ) -> Result<usize, Error> {
        let mut signed_out = 0;
        for (app, user) in self.records(person_id).await? {
            signed_out += app
                .tokens()
                .sign_out(
                    app.config().sku(),
                    user.open_id(),
                    reason,
                    DEFAULT_SIGN_OUT_NOTICE,
                )
                .await?;
        }
        tracing::info!(person = person_id, %reason, tokens = signed_out, "person signed out in every app");
        Ok(signed_out)
    }

    /// A person's records in the apps the registry holds, each with its app and the
    /// user as its tokens name it.
    async fn records(&self, person_id: &str) -> Result<Vec<(MpAuth<T, U>, AuthedUser)>, Error> {
        let records = self.inner.users.person(person_id).await?;
        Ok(records
            .iter()
            .filter_map(|record| {
                let app = self.get(&record.app_id)?;
                let user = AuthedUser::new(app.config().sku().clone(), &record.open_id);
                Some((app, user))
            })
            .collect())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Owners> {
        // A writer that panicked left the table as it was.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `apps` the registry's, under the writers' lock. The layers first accept
    /// only the skus both the old and the new apps have, then the apps change, then
    /// the layers accept the new apps' skus: a layer never accepts a token whose app
    /// the handlers cannot find.
    fn publish(&self, apps: Vec<MpAuth<T, U>>) {
        let skus: Vec<LiveSku> = apps
            .iter()
            .map(|a| LiveSku {
                sku: a.config().sku().clone(),
                app_id: Arc::from(a.config().app_id()),
            })
            .collect();
        let kept = self
            .inner
            .skus
            .get()
            .iter()
            .filter(|old| skus.contains(old))
            .cloned()
            .collect();
        self.inner.skus.set(kept);
        self.inner.apps.store(Arc::new(apps));
        self.inner.skus.set(skus);
    }
}
