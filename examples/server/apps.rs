//! The example server's mini-programs: from `MPAUTHX_APP_ID` and friends (one app), from
//! the settings file `MPAUTHX_APPS_FILE` (several, re-read on SIGHUP), or simulated (two
//! apps on the embedded defaults).

use std::{path::PathBuf, time::Duration};

use mpauthx::{
    AccessTokenManager, AppSecret, LoginThrottle, MpApps, MpAuthConfig, RedisTokenStore, Sku,
    TokenStore, UserStore,
};
use serde::Deserialize;

use super::{BadSetting, MAX_SESSION_AGE_SECS, MAX_TOKEN_TTL_SECS, checked_base_url};

/// One app as the settings describe it.
#[derive(Clone)]
pub struct AppSetting {
    pub app_id: String,
    pub secret: AppSecret,
    pub sku: Sku,
    pub base_url: String,
    pub token_ttl: Duration,
    pub session_max_age: Option<Duration>,
    pub max_devices: Option<u32>,
}

impl PartialEq for AppSetting {
    fn eq(&self, other: &Self) -> bool {
        self.app_id == other.app_id
            && self.secret.expose_secret() == other.secret.expose_secret()
            && self.sku == other.sku
            && self.base_url == other.base_url
            && self.token_ttl == other.token_ttl
            && self.session_max_age == other.session_max_age
            && self.max_devices == other.max_devices
    }
}

/// The defaults a file's apps take for what they leave out.
#[derive(Clone)]
pub struct Defaults {
    pub base_url: String,
    pub token_ttl: Duration,
    pub session_max_age: Option<Duration>,
}

/// The settings file: `{"apps": [{…}, …]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppsFile {
    apps: Vec<FileApp>,
}

/// One app of the settings file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApp {
    app_id: String,
    app_secret: String,
    sku: String,
    #[serde(default)]
    token_ttl: Option<u64>,
    #[serde(default)]
    session_max_age: Option<u64>,
    #[serde(default)]
    max_devices: Option<u32>,
    #[serde(default)]
    wechat_api: Option<String>,
}

/// Reads and checks the settings file: every app valid, app ids and skus unique. The
/// app secrets are never shown, not even in an error (a JSON error names its place in
/// the file, never the text there).
pub fn read_file(path: &PathBuf, defaults: &Defaults) -> Result<Vec<AppSetting>, BadSetting> {
    let bad = |message: String| BadSetting::new("MPAUTHX_APPS_FILE", message);
    let shown = path.display();
    warn_if_readable_by_others(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read MPAUTHX_APPS_FILE={shown}: {e}")))?;
    let file: AppsFile = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "MPAUTHX_APPS_FILE={shown} is not the expected JSON ({:?} error at line {}, column {}): {{\"apps\": [{{\"app_id\", \"app_secret\", \"sku\", \"token_ttl\"?, \"session_max_age\"?, \"max_devices\"?, \"wechat_api\"?}}]}}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    if file.apps.is_empty() {
        return Err(bad(format!("MPAUTHX_APPS_FILE={shown} lists no app")));
    }
    let mut apps: Vec<AppSetting> = Vec::with_capacity(file.apps.len());
    for (i, app) in file.apps.into_iter().enumerate() {
        let at = format!("MPAUTHX_APPS_FILE={shown}, app {}", i + 1);
        let sku = Sku::new(&app.sku).map_err(|e| bad(format!("{at}: sku {:?}: {e}", app.sku)))?;
        if app.app_secret.is_empty() {
            return Err(bad(format!("{at}: app_secret is empty")));
        }
        // The app id is checked as the crate checks it; the secret goes nowhere else.
        MpAuthConfig::new(&app.app_id, "x", sku.as_str())
            .map_err(|e| bad(format!("{at}: app_id {:?}: {e}", app.app_id)))?;
        let token_ttl = match app.token_ttl {
            None => defaults.token_ttl,
            Some(secs @ 1..=MAX_TOKEN_TTL_SECS) => Duration::from_secs(secs),
            Some(_) => {
                return Err(bad(format!(
                    "{at}: token_ttl is not a number of seconds from 1 to {MAX_TOKEN_TTL_SECS}"
                )));
            }
        };
        let session_max_age = match app.session_max_age {
            None => defaults.session_max_age,
            Some(secs @ 1..=MAX_SESSION_AGE_SECS) => Some(Duration::from_secs(secs)),
            Some(_) => {
                return Err(bad(format!(
                    "{at}: session_max_age is not a number of seconds from 1 to {MAX_SESSION_AGE_SECS}"
                )));
            }
        };
        if app.max_devices == Some(0) {
            return Err(bad(format!("{at}: max_devices must be 1 or more")));
        }
        let base_url = match app.wechat_api {
            None => defaults.base_url.clone(),
            Some(url) => checked_base_url(url)
                .map_err(|e| bad(format!("{at}: wechat_api: {}", e.message)))?,
        };
        if apps.iter().any(|a| a.app_id == app.app_id) {
            return Err(bad(format!(
                "{at}: app_id {:?} is listed twice",
                app.app_id
            )));
        }
        if apps.iter().any(|a| a.sku == sku) {
            return Err(bad(format!("{at}: sku {:?} is another app's", app.sku)));
        }
        apps.push(AppSetting {
            app_id: app.app_id,
            secret: AppSecret::new(app.app_secret),
            sku,
            base_url,
            token_ttl,
            session_max_age,
            max_devices: app.max_devices,
        });
    }
    Ok(apps)
}

/// The file holds app secrets: say so if other users may read it.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "MPAUTHX_APPS_FILE holds app secrets and other users may read it; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &PathBuf) {}

/// How the server's apps share what is not per app.
#[derive(Clone)]
pub struct Shared {
    /// The Redis that keeps every app's WeChat access token, if one is set.
    pub redis: Option<RedisTokenStore>,
    /// The login limits, the same for every app (counted per app).
    pub throttle: Option<LoginThrottle>,
}

/// Makes the registry's apps those of `settings`: new ones added, changed ones replaced
/// (a rotated secret, other limits), missing ones removed; unchanged ones are kept as
/// they are, with their access tokens and logins in flight.
pub fn apply<T: TokenStore, U: UserStore>(
    apps: &MpApps<T, U>,
    current: &mut Vec<AppSetting>,
    settings: Vec<AppSetting>,
    shared: &Shared,
) {
    for gone in current
        .iter()
        .filter(|c| !settings.iter().any(|s| s.app_id == c.app_id))
    {
        apps.remove(&gone.app_id);
    }
    let mut applied = Vec::with_capacity(settings.len());
    for setting in settings {
        if current.contains(&setting) {
            applied.push(setting);
            continue;
        }
        let mut config = MpAuthConfig::new(
            &setting.app_id,
            setting.secret.expose_secret(),
            setting.sku.as_str(),
        )
        .expect("checked when the settings were read")
        .with_token_ttl(setting.token_ttl)
        .with_wechat_base_url(&setting.base_url);
        if let Some(max_age) = setting.session_max_age {
            config = config.with_max_session_age(max_age);
        }
        if let Some(max) = setting.max_devices {
            config = config.with_max_tokens_per_user(max);
        }
        let access_tokens = match &shared.redis {
            Some(store) => AccessTokenManager::redis(config.wechat().clone(), store),
            None => AccessTokenManager::memory(config.wechat().clone()),
        };
        let mut builder = apps.app(config).with_access_tokens(access_tokens);
        if let Some(throttle) = &shared.throttle {
            builder = builder.with_login_throttle(throttle.clone());
        }
        match apps.add(builder.build()) {
            Ok(_) => {
                tracing::info!(app_id = setting.app_id, sku = %setting.sku, api = setting.base_url, "serving the app");
                applied.push(setting);
            }
            // Only on a reload that gives a sku to another app id than the one that had
            // it since the server started (its tokens may still be live). The app, if
            // it was served, stays as it was, and so does its setting here: `current`
            // is what the registry holds, so that a later reload can remove it.
            Err(e) => {
                tracing::error!(app_id = setting.app_id, error = %e, "app not added");
                if let Some(kept) = current.iter().find(|c| c.app_id == setting.app_id) {
                    applied.push(kept.clone());
                }
            }
        }
    }
    *current = applied;
}

/// Re-reads the settings file at each SIGHUP and applies it; a file that does not
/// read changes nothing (the error is logged).
#[cfg(unix)]
pub fn reload_on_sighup<T: TokenStore, U: UserStore>(
    apps: MpApps<T, U>,
    mut current: Vec<AppSetting>,
    path: PathBuf,
    defaults: Defaults,
    shared: Shared,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match read_file(&path, &defaults) {
                Ok(settings) => {
                    apply(&apps, &mut current, settings, &shared);
                    let first = current.first().map(|app| app.app_id.as_str());
                    if apps.set_default_app(first).is_err() {
                        tracing::warn!(
                            "SIGHUP: the first app was not added; logins that name no app need one"
                        );
                    }
                    tracing::info!(apps = ?apps.app_ids(), "SIGHUP: re-read MPAUTHX_APPS_FILE");
                }
                Err(bad) => {
                    tracing::error!(
                        setting = bad.setting,
                        "SIGHUP: {}; the apps stay as they were",
                        bad.message
                    )
                }
            }
        }
    });
    Ok(())
}
