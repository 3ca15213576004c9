//! Database outages and bad settings: a server stopped, frozen or restarted under the
//! store answers transient errors (503), never a panic, and the store recovers by
//! itself; a bad URL or a wrong password fails the open with an error that never
//! repeats the password. Each test runs a database server of its own.

use std::time::{Duration, Instant};

use mpauthx::{
    Error, MySqlUserStore, PostgresUserStore, SqlUserStoreBuilder, UserStore, UserStoreError,
};

use crate::{
    common::{mariadb::MariaDbServer, postgres::PostgresServer},
    dbs::MySql,
    suite::APP,
};

const QUERY_TIMEOUT: Duration = Duration::from_millis(800);

fn fast<S>(builder: SqlUserStoreBuilder<S>) -> SqlUserStoreBuilder<S> {
    builder
        .with_connect_timeout(Duration::from_secs(1))
        .with_query_timeout(QUERY_TIMEOUT)
}

/// `store.get` fails transiently (503) within a bound while the server is away.
async fn assert_unavailable(store: &impl UserStore, what: &str) {
    let started = Instant::now();
    let error = store.get(APP, "o-any").await.expect_err(what);
    assert!(error.is_transient(), "{what}: {error:?}");
    assert_eq!(Error::from(error).status(), 503, "{what}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what}: took {:?}",
        started.elapsed()
    );
}

/// The store answers again within a few seconds, without being rebuilt.
async fn assert_recovers(store: &impl UserStore, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.get(APP, "o-any").await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{what}: {e:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: no recovery: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outages_are_503_and_the_store_recovers() {
    let mut server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let store = fast(PostgresUserStore::builder(&server.url()))
        .open()
        .await
        .unwrap();
    store
        .upsert_login(APP, "o-kept", None, None, None)
        .await
        .unwrap();

    server.freeze();
    assert_unavailable(&store, "frozen").await;
    server.thaw();
    assert_recovers(&store, "thawed").await;

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    assert_unavailable(&store, "stopped").await;
    let error = store
        .upsert_login(APP, "o-new", None, None, None)
        .await
        .expect_err("no write while stopped");
    assert!(error.is_transient(), "{error:?}");
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    assert_recovers(&store, "restarted").await;
    assert!(
        store.get(APP, "o-kept").await.unwrap().is_some(),
        "data kept"
    );
    assert!(
        store.get(APP, "o-new").await.unwrap().is_none(),
        "nothing half-written"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_outages_are_503_and_the_store_recovers() {
    let mut server = tokio::task::spawn_blocking(MariaDbServer::start)
        .await
        .unwrap();
    let store = fast(MySqlUserStore::builder(&server.url()))
        .open()
        .await
        .unwrap();
    store
        .upsert_login(APP, "o-kept", None, None, None)
        .await
        .unwrap();

    server.freeze();
    assert_unavailable(&store, "frozen").await;
    server.thaw();
    assert_recovers(&store, "thawed").await;

    let mut server = tokio::task::spawn_blocking(move || {
        server.stop();
        server
    })
    .await
    .unwrap();
    assert_unavailable(&store, "stopped").await;
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    assert_recovers(&store, "restarted").await;
    assert!(
        store.get(APP, "o-kept").await.unwrap().is_some(),
        "data kept"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_fail_the_open_without_the_password() {
    let pg = tokio::task::spawn_blocking(PostgresServer::shared)
        .await
        .unwrap();
    let my = tokio::task::spawn_blocking(MariaDbServer::shared)
        .await
        .unwrap();
    let wrong_password = "wrong-password-9d2e";
    let cases = [
        (
            format!(
                "postgres://mpauthx:{wrong_password}@127.0.0.1:{}/mpauthx",
                pg.port()
            ),
            true,
        ),
        (
            "postgres://mpauthx:wrong-password-9d2e@127.0.0.1:1/mpauthx".to_owned(),
            true,
        ),
        (
            format!(
                "mysql://mpauthx:{wrong_password}@127.0.0.1:{}/mpauthx",
                my.port()
            ),
            false,
        ),
        (
            "mysql://mpauthx:wrong-password-9d2e@127.0.0.1:1/mpauthx".to_owned(),
            false,
        ),
    ];
    for (url, postgres) in cases {
        let started = Instant::now();
        let error = if postgres {
            fast(PostgresUserStore::builder(&url))
                .open()
                .await
                .unwrap_err()
        } else {
            fast(MySqlUserStore::builder(&url))
                .open()
                .await
                .unwrap_err()
        };
        let shown = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
        assert!(!shown.contains(wrong_password), "{shown}");
        assert!(started.elapsed() < Duration::from_secs(10), "{url}");
        assert!(
            matches!(
                error,
                UserStoreError::Pool(_)
                    | UserStoreError::Unavailable(_)
                    | UserStoreError::Database(_)
            ),
            "{error:?}"
        );
    }
    for url in ["postgres://[broken", "not a url at all"] {
        let error = PostgresUserStore::open(url).await.unwrap_err();
        assert!(
            matches!(error, UserStoreError::InvalidInput(_)),
            "{error:?}"
        );
    }
    let error = MySqlUserStore::open("mysql://:@:nope").await.unwrap_err();
    assert!(
        matches!(error, UserStoreError::InvalidInput(_)),
        "{error:?}"
    );
}

/// With the database down a login answers 503 and leaves no token behind: the token is
/// taken back when the user cannot be stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_while_postgres_is_down_is_503_and_issues_no_token() {
    use mpauthx::{AuthorizeRequest, MemoryTokenStore, MpAuth, TokenStore};

    use crate::common::{keys::sku, login::config, sim};

    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let users = fast(PostgresUserStore::builder(&server.url()))
        .open()
        .await
        .unwrap();
    let tokens = MemoryTokenStore::new();
    let auth = MpAuth::new(config().with_wechat_base_url(&base), tokens.clone(), users);
    let code = sim.login("carol").unwrap().code;
    server.freeze();
    let error = auth
        .authorize(&AuthorizeRequest::new(code))
        .await
        .unwrap_err();
    assert_eq!(error.status(), 503, "{error:?}");
    assert!(matches!(error, Error::Users(_)), "{error:?}");
    assert!(
        tokens
            .list(&sku(), &sim.open_id("carol"))
            .await
            .unwrap()
            .is_empty(),
        "no token for a user who was not stored"
    );
    server.thaw();
    let code = sim.login("carol").unwrap().code;
    let authorized = auth.authorize(&AuthorizeRequest::new(code)).await.unwrap();
    assert_eq!(authorized.user.unwrap().open_id, sim.open_id("carol"));
}

/// A MySQL login given up on at the query timeout while it holds its named locks (its
/// row is locked by another session) leaves no lock behind: its connection is closed,
/// and the next login of the user, through another pool, goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_login_given_up_on_leaves_no_lock_behind() {
    let db = MySql::new().await;
    let open = || fast(MySqlUserStore::builder(&db.url())).open();
    let store = open().await.unwrap();
    store
        .upsert_login(APP, "o-stuck", Some("u-stuck"), None, None)
        .await
        .unwrap();
    // Another session holds the row for 3 s.
    let holder = {
        let sql = "BEGIN; SELECT 1 FROM `user` WHERE `openId` = 'o-stuck' FOR UPDATE; \
                   SELECT SLEEP(3); COMMIT;";
        let db = MySql::on_same(&db);
        tokio::task::spawn_blocking(move || db.sql(sql))
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let error = store
        .upsert_login(APP, "o-stuck", Some("u-stuck"), None, None)
        .await
        .expect_err("the row is held");
    assert!(error.is_transient(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    holder.await.unwrap();
    // The row is free again: a login through another pool must not wait for the lock
    // the given-up login took.
    let other = open().await.unwrap();
    let started = Instant::now();
    other
        .upsert_login(APP, "o-stuck", Some("u-stuck"), None, None)
        .await
        .expect("no lock left behind");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}
