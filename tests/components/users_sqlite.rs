//! `SqliteUserStore` against real database files in a temporary directory.

use std::{
    error::Error as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use mpauthx::{PhoneNumber, Profile, SqliteUserStore, User, UserStore, UserStoreError};

use crate::common::users::{count_rows, raw, temp_db};

const LEGACY_SCHEMA: &str = "CREATE TABLE user(openId text primary key not null, city text, \
     country text, gender integer, language text, nickName text, province text);";

fn columns(path: &Path) -> Vec<String> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('user')")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn table_exists(path: &Path) -> bool {
    raw(path)
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type='table' AND name='user')",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

fn full_profile() -> Profile {
    Profile {
        nick_name: Some("Ada".into()),
        avatar_url: Some("https://example.invalid/a.png".into()),
        gender: Some(2),
        city: Some("Hangzhou".into()),
        province: Some("Zhejiang".into()),
        country: Some("China".into()),
        language: Some("zh_CN".into()),
    }
}

/// The whole error chain as text, as a log line would show it.
fn chain(err: &UserStoreError) -> String {
    let mut out = format!("{err} / {err:?}");
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(&format!(" / {s}"));
        source = s.source();
    }
    out
}

/// The app the tests' users belong to.
const APP: &str = "wx-test-app";

/// Opens a file that may hold single-app users, as users of [`APP`].
async fn open_legacy(path: &Path) -> Result<SqliteUserStore, UserStoreError> {
    SqliteUserStore::builder(path)
        .with_legacy_app_id(APP)
        .open()
        .await
}

const ALL_COLUMNS: [&str; 17] = [
    "appId",
    "openId",
    "personId",
    "city",
    "country",
    "gender",
    "language",
    "nickName",
    "province",
    "avatarUrl",
    "unionId",
    "created_at",
    "updated_at",
    "last_login_at",
    "phoneNumber",
    "purePhoneNumber",
    "countryCode",
];

/// The schema this crate created before phone numbers (schema version 1).
const V1_SCHEMA: &str = "CREATE TABLE user(openId text primary key not null, city text, \
     country text, gender integer, language text, nickName text, province text, avatarUrl text, \
     unionId text, created_at integer, updated_at integer, last_login_at integer); \
     CREATE INDEX user_unionId ON user(unionId); PRAGMA user_version = 1;";

fn phone(pure: &str) -> PhoneNumber {
    PhoneNumber {
        phone_number: pure.into(),
        pure_phone_number: pure.into(),
        country_code: "86".into(),
    }
}

#[tokio::test]
async fn fresh_file_gets_schema_wal_and_index() {
    let (_dir, path) = temp_db();
    let _store = SqliteUserStore::open(&path).await.unwrap();

    assert_eq!(columns(&path), ALL_COLUMNS);
    let conn = raw(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let indexed: String = conn
        .query_row(
            "SELECT name FROM pragma_index_info('user_unionId')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexed, "unionId");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3, "schema version 3: users keyed by (app, openid)");
    let indexed: String = conn
        .query_row(
            "SELECT name FROM pragma_index_info('user_personId')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexed, "personId");
}

#[tokio::test]
async fn migrates_original_node_schema_keeping_rows() {
    let (_dir, path) = temp_db();
    {
        let conn = raw(&path);
        conn.execute_batch(LEGACY_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO user (openId, city, country, gender, language, nickName, province) \
             VALUES ('o-legacy', 'Shenzhen', 'China', 1, 'zh_CN', '老用户', 'Guangdong')",
            [],
        )
        .unwrap();
    }

    let store = open_legacy(&path).await.unwrap();
    assert_eq!(columns(&path), ALL_COLUMNS);

    let user = store
        .get(APP, "o-legacy")
        .await
        .unwrap()
        .expect("legacy row kept");
    assert_eq!(user.nick_name.as_deref(), Some("老用户"));
    assert_eq!(user.city.as_deref(), Some("Shenzhen"));
    assert_eq!(user.province.as_deref(), Some("Guangdong"));
    assert_eq!(user.country.as_deref(), Some("China"));
    assert_eq!(user.language.as_deref(), Some("zh_CN"));
    assert_eq!(user.gender, Some(1));
    assert_eq!(user.avatar_url, None);
    assert_eq!(user.union_id, None);
    assert!(user.created_at > 0, "backfilled at migration");
    assert_eq!(user.updated_at, user.created_at);
    assert_eq!(
        user.last_login_at, None,
        "never logged in through this store"
    );

    let user = store
        .upsert_login(APP, "o-legacy", Some("u-1"), None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.nick_name.as_deref(), Some("老用户"));
    assert!(user.last_login_at.is_some());
    assert_eq!(count_rows(&path, "o-legacy"), 1);
}

#[tokio::test]
async fn columns_of_an_operators_own_move_with_the_rows() {
    let (_dir, path) = temp_db();
    {
        let conn = raw(&path);
        conn.execute_batch(LEGACY_SCHEMA).unwrap();
        conn.execute_batch(
            "ALTER TABLE user ADD COLUMN vipLevel integer; \
             ALTER TABLE user ADD COLUMN \"note \"\"quoted\"\"\" text; \
             INSERT INTO user (openId, nickName, vipLevel, \"note \"\"quoted\"\"\") \
                 VALUES ('o-vip', 'Ada', 3, 'keep me'); \
             CREATE INDEX user_vip ON user(vipLevel); \
             CREATE TABLE audit (openId text, what text); \
             CREATE TRIGGER user_audit AFTER UPDATE OF vipLevel ON user \
                 BEGIN INSERT INTO audit VALUES (new.openId, 'vip'); END;",
        )
        .unwrap();
    }
    let store = open_legacy(&path).await.unwrap();
    let mut expected: Vec<String> = ALL_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    expected.extend(["vipLevel".to_owned(), "note \"quoted\"".to_owned()]);
    assert_eq!(columns(&path), expected);
    let (level, note): (i64, String) = raw(&path)
        .query_row(
            "SELECT vipLevel, \"note \"\"quoted\"\"\" FROM user WHERE appId = ?1 AND openId = 'o-vip'",
            [APP],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((level, note.as_str()), (3, "keep me"));
    let user = store.get(APP, "o-vip").await.unwrap().expect("row kept");
    assert_eq!(user.nick_name.as_deref(), Some("Ada"));
    // Logins leave the operator's columns alone.
    store
        .upsert_login(APP, "o-vip", None, None, None)
        .await
        .unwrap();
    let level: i64 = raw(&path)
        .query_row(
            "SELECT vipLevel FROM user WHERE openId = 'o-vip'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(level, 3);
    // The table's own index and trigger are made again.
    let conn = raw(&path);
    let own: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE tbl_name = 'user' AND name IN ('user_vip', 'user_audit') ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(own, ["user_audit", "user_vip"]);
    conn.execute("UPDATE user SET vipLevel = 4 WHERE openId = 'o-vip'", [])
        .unwrap();
    let audited: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |row| row.get(0))
        .unwrap();
    assert_eq!(audited, 1, "the trigger fires on the new table");
}

#[tokio::test]
async fn a_table_with_a_foreign_key_on_user_is_refused_and_left_alone() {
    let (_dir, path) = temp_db();
    let dump = |path: &Path| -> Vec<String> {
        raw(path)
            .prepare("SELECT sql FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get::<_, Option<String>>(0))
            .unwrap()
            .map(|sql| sql.unwrap().unwrap_or_default())
            .collect()
    };
    raw(&path)
        .execute_batch(&format!(
            "{LEGACY_SCHEMA} \
             INSERT INTO user (openId, nickName) VALUES ('o-1', 'Ada'); \
             CREATE TABLE orders (id integer PRIMARY KEY, \
                 openId text REFERENCES user(openId) ON DELETE CASCADE); \
             INSERT INTO orders (openId) VALUES ('o-1');"
        ))
        .unwrap();
    let before = dump(&path);
    let error = open_legacy(&path).await.unwrap_err();
    assert!(matches!(error, UserStoreError::Database(_)), "{error:?}");
    let message = chain(&error);
    assert!(
        message.contains("`orders`") && message.contains("foreign key"),
        "{message}"
    );
    assert_eq!(dump(&path), before, "nothing changed");
    let orders: i64 = raw(&path)
        .query_row("SELECT count(*) FROM orders", [], |row| row.get(0))
        .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(count_rows(&path, "o-1"), 1);
}

#[tokio::test]
async fn migrates_a_version_1_file_to_phone_columns_keeping_rows() {
    let (_dir, path) = temp_db();
    {
        let conn = raw(&path);
        conn.execute_batch(V1_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO user (openId, unionId, nickName, created_at, updated_at, last_login_at) \
             VALUES ('o-v1', 'u-v1', 'Ada', 100, 200, 300)",
            [],
        )
        .unwrap();
    }
    let store = open_legacy(&path).await.unwrap();
    assert_eq!(columns(&path), ALL_COLUMNS);
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let user = store
        .get(APP, "o-v1")
        .await
        .unwrap()
        .expect("the row is kept");
    assert_eq!(
        (user.union_id.as_deref(), user.nick_name.as_deref()),
        (Some("u-v1"), Some("Ada"))
    );
    assert_eq!(
        (user.created_at, user.updated_at, user.last_login_at),
        (100, 200, Some(300))
    );
    assert_eq!(user.phone(), None);
    let bound = store
        .set_phone(APP, "o-v1", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.phone(), Some(phone("13800138000")));
}

#[tokio::test]
async fn phones_are_bound_replaced_and_kept_across_logins() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    assert_eq!(
        store
            .set_phone(APP, "o-nobody", &phone("13800138000"))
            .await
            .unwrap(),
        None,
        "no such user: nothing written"
    );
    assert_eq!(count_rows(&path, "o-nobody"), 0);

    let user = store
        .upsert_login(APP, "o-1", None, None, Some(&phone("13800138000")))
        .await
        .unwrap()
        .user;
    assert_eq!(user.phone(), Some(phone("13800138000")));
    assert_eq!(user.pure_phone_number.as_deref(), Some("13800138000"));
    let again = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(
        again.phone(),
        Some(phone("13800138000")),
        "a login without a phone keeps it"
    );
    assert_eq!(again.updated_at, user.updated_at);

    conn_set_updated_at(&path, "o-1", 5);
    let same = store
        .set_phone(APP, "o-1", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        same.updated_at, 5,
        "binding the same number changes nothing"
    );
    let other = PhoneNumber {
        phone_number: "+1 4155550100".into(),
        pure_phone_number: "4155550100".into(),
        country_code: "1".into(),
    };
    let replaced = store.set_phone(APP, "o-1", &other).await.unwrap().unwrap();
    assert_eq!(replaced.phone(), Some(other.clone()));
    assert!(replaced.updated_at > 5);
    assert_eq!(replaced.last_login_at, again.last_login_at, "not a login");
    assert_eq!(
        store.get(APP, "o-1").await.unwrap().unwrap().phone(),
        Some(other)
    );
}

fn conn_set_updated_at(path: &Path, open_id: &str, at: i64) {
    raw(path)
        .execute(
            "UPDATE user SET updated_at = ?1 WHERE openId = ?2",
            rusqlite::params![at, open_id],
        )
        .unwrap();
}

#[tokio::test]
async fn reopening_is_a_no_op() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    let first = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    drop(store);

    let store = SqliteUserStore::open(&path).await.unwrap();
    assert_eq!(store.get(APP, "o-1").await.unwrap(), Some(first));
    assert_eq!(columns(&path), ALL_COLUMNS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_of_a_legacy_file_all_succeed() {
    let (_dir, path) = temp_db();
    {
        let conn = raw(&path);
        conn.execute_batch(LEGACY_SCHEMA).unwrap();
        conn.execute("INSERT INTO user (openId) VALUES ('o-legacy')", [])
            .unwrap();
    }
    // Separate stores have separate connections, which is what SQLite sees from two processes.
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { open_legacy(&path).await })
        })
        .collect();
    for open in opens {
        let store = open.await.unwrap().expect("every opener succeeds");
        assert!(store.get(APP, "o-legacy").await.unwrap().is_some());
    }
    assert_eq!(columns(&path), ALL_COLUMNS);
}

#[tokio::test]
async fn upsert_inserts_then_merges_only_present_fields() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();

    let created = store
        .upsert_login(APP, "o-1", None, Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(created.open_id, "o-1");
    assert_eq!(created.profile(), full_profile());
    assert_eq!(created.last_login_at, Some(created.created_at));

    let again = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(
        again.profile(),
        full_profile(),
        "no profile keeps every field"
    );
    assert_eq!(again.created_at, created.created_at);

    let empty = store
        .upsert_login(APP, "o-1", None, Some(&Profile::default()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(
        empty.profile(),
        full_profile(),
        "all-None profile keeps every field"
    );

    let partial = Profile {
        nick_name: Some("Grace".into()),
        gender: Some(1),
        ..Profile::default()
    };
    let merged = store
        .upsert_login(APP, "o-1", None, Some(&partial), None)
        .await
        .unwrap()
        .user;
    let expected = Profile {
        nick_name: Some("Grace".into()),
        gender: Some(1),
        ..full_profile()
    };
    assert_eq!(merged.profile(), expected);
    assert_eq!(store.get(APP, "o-1").await.unwrap(), Some(merged));
    assert_eq!(count_rows(&path, "o-1"), 1);
}

#[tokio::test]
async fn updated_at_moves_only_when_data_changes() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    store
        .upsert_login(APP, "o-1", Some("u-1"), Some(&full_profile()), None)
        .await
        .unwrap();
    // Backdate, since the store's clock has one-second resolution.
    raw(&path)
        .execute("UPDATE user SET updated_at = 1, last_login_at = 1", [])
        .unwrap();

    let same = store
        .upsert_login(APP, "o-1", Some("u-1"), Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(same.updated_at, 1, "same data is not a change");
    assert!(same.last_login_at.unwrap() > 1, "but it is a login");

    let changed = store
        .upsert_login(
            APP,
            "o-1",
            None,
            Some(&Profile {
                city: Some("Beijing".into()),
                ..Profile::default()
            }),
            None,
        )
        .await
        .unwrap()
        .user;
    assert!(changed.updated_at > 1);
}

#[tokio::test]
async fn union_id_is_set_when_given_and_kept_otherwise() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();

    let user = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id, None);
    let user = store
        .upsert_login(APP, "o-1", Some("u-1"), None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id.as_deref(), Some("u-1"));
    let user = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id.as_deref(), Some("u-1"), "kept when not given");
    let user = store
        .upsert_login(APP, "o-1", Some("u-2"), None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id.as_deref(), Some("u-2"));

    let found = store.get_by_union_id("u-2").await.unwrap().unwrap();
    assert_eq!(found.open_id, "o-1");
    assert!(store.get_by_union_id("u-1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_logins_create_exactly_one_row() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let profile = Profile {
                    nick_name: Some(format!("n{i}")),
                    ..Profile::default()
                };
                barrier.wait().await;
                store
                    .upsert_login(APP, "o-race", None, Some(&profile), None)
                    .await
            })
        })
        .collect();
    let mut created = std::collections::HashSet::new();
    for task in tasks {
        let user = task.await.unwrap().expect("every login succeeds").user;
        assert_eq!(user.open_id, "o-race");
        created.insert(user.created_at);
    }
    assert_eq!(count_rows(&path, "o-race"), 1);
    let total: i64 = raw(&path)
        .query_row("SELECT count(*) FROM user", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 1);
    assert!(
        created.len() <= 2,
        "all logins saw the one row's creation time"
    );
}

#[tokio::test]
async fn injection_looking_open_id_is_stored_verbatim() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    store
        .upsert_login(APP, "o-bystander", None, None, None)
        .await
        .unwrap();

    let hostile = "x'); DROP TABLE user;--";
    let profile = Profile {
        nick_name: Some("Robert'); DELETE FROM user; --".into()),
        ..Profile::default()
    };
    let user = store
        .upsert_login(APP, hostile, Some("' OR 1=1 --"), Some(&profile), None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.open_id, hostile);

    assert!(table_exists(&path));
    assert_eq!(count_rows(&path, hostile), 1);
    assert_eq!(count_rows(&path, "o-bystander"), 1);
    let stored = store.get(APP, hostile).await.unwrap().unwrap();
    assert_eq!(stored.nick_name, profile.nick_name);
    assert_eq!(stored.union_id.as_deref(), Some("' OR 1=1 --"));
    assert!(
        store
            .get_by_union_id("' OR 1=1 --")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        !store.delete(APP, "' OR 1=1 --").await.unwrap(),
        "no such open_id"
    );
    assert_eq!(count_rows(&path, "o-bystander"), 1);
}

#[tokio::test]
async fn read_only_flag_rejects_writes_without_a_row() {
    let (_dir, path) = temp_db();
    let _writer = SqliteUserStore::open(&path).await.unwrap();
    let reader = SqliteUserStore::builder(&path)
        .with_read_only(true)
        .open()
        .await
        .unwrap();

    assert!(
        reader.get(APP, "o-1").await.unwrap().is_none(),
        "reads still work"
    );
    let err = reader
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, UserStoreError::ReadOnly(_)), "{err:?}");
    assert!(!err.is_transient());
    let err = reader.delete(APP, "o-1").await.unwrap_err();
    assert!(matches!(err, UserStoreError::ReadOnly(_)), "{err:?}");
    assert_eq!(count_rows(&path, "o-1"), 0);
}

#[tokio::test]
async fn read_only_uri_rejects_writes_without_a_row() {
    let (_dir, path) = temp_db();
    let _writer = SqliteUserStore::open(&path).await.unwrap();
    let uri = format!("file:{}?mode=ro", path.display());
    let reader = SqliteUserStore::open(&uri).await.unwrap();

    let err = reader
        .upsert_login(APP, "o-1", None, Some(&full_profile()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, UserStoreError::ReadOnly(_)), "{err:?}");
    assert_eq!(count_rows(&path, "o-1"), 0);
}

#[tokio::test]
async fn read_only_open_of_an_unmigrated_file_fails_as_read_only() {
    let (_dir, path) = temp_db();
    raw(&path).execute_batch(LEGACY_SCHEMA).unwrap();
    let err = SqliteUserStore::builder(&path)
        .with_read_only(true)
        .open()
        .await
        .unwrap_err();
    assert!(matches!(err, UserStoreError::ReadOnly(_)), "{err:?}");
    assert_eq!(columns(&path).len(), 7, "left as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_lock_gives_busy_within_the_timeout_and_no_row() {
    let (_dir, path) = temp_db();
    let busy_timeout = Duration::from_millis(300);
    let store = SqliteUserStore::builder(&path)
        .with_busy_timeout(busy_timeout)
        .open()
        .await
        .unwrap();
    let secret_looking_id = "o-3f9c2e-do-not-echo";

    let holder = raw(&path);
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = Instant::now();
    let err = store
        .upsert_login(APP, secret_looking_id, Some("u-do-not-echo"), None, None)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();

    assert!(matches!(err, UserStoreError::Busy(_)), "{err:?}");
    assert!(err.is_transient());
    assert!(
        elapsed >= busy_timeout / 2,
        "waited for the lock: {elapsed:?}"
    );
    assert!(
        elapsed < busy_timeout + Duration::from_secs(3),
        "gave up: {elapsed:?}"
    );
    let text = chain(&err);
    assert!(!text.contains("do-not-echo"), "parameters leaked: {text}");

    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(count_rows(&path, secret_looking_id), 0);
    // The store recovers once the lock is gone.
    store
        .upsert_login(APP, secret_looking_id, None, None, None)
        .await
        .unwrap();
    assert_eq!(count_rows(&path, secret_looking_id), 1);
}

#[tokio::test]
async fn open_under_an_exclusive_lock_fails_busy() {
    let (_dir, path) = temp_db();
    let holder = raw(&path);
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let started = Instant::now();
    let err = SqliteUserStore::builder(&path)
        .with_busy_timeout(Duration::from_millis(200))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(err, UserStoreError::Busy(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test]
async fn update_profile_get_and_delete() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    let partial = Profile {
        avatar_url: Some("https://example.invalid/b.png".into()),
        ..Profile::default()
    };

    assert_eq!(
        store.update_profile(APP, "o-1", &partial).await.unwrap(),
        None
    );
    assert_eq!(count_rows(&path, "o-1"), 0, "update does not create");

    store
        .upsert_login(APP, "o-1", Some("u-1"), Some(&full_profile()), None)
        .await
        .unwrap();
    raw(&path)
        .execute("UPDATE user SET last_login_at = 1, updated_at = 1", [])
        .unwrap();
    let user = store
        .update_profile(APP, "o-1", &partial)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.avatar_url, partial.avatar_url);
    assert_eq!(user.nick_name, full_profile().nick_name);
    assert_eq!(user.union_id.as_deref(), Some("u-1"));
    assert_eq!(user.last_login_at, Some(1), "not a login");
    assert!(user.updated_at > 1);

    assert!(store.delete(APP, "o-1").await.unwrap());
    assert!(!store.delete(APP, "o-1").await.unwrap());
    assert_eq!(store.get(APP, "o-1").await.unwrap(), None);
}

#[tokio::test]
async fn legacy_gender_stored_as_text_still_reads() {
    let (_dir, path) = temp_db();
    {
        let conn = raw(&path);
        conn.execute_batch(LEGACY_SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO user (openId, gender) VALUES ('o-a', 'male'), ('o-b', '2'), ('o-c', 1.0)",
            [],
        )
        .unwrap();
    }
    let store = open_legacy(&path).await.unwrap();
    assert_eq!(store.get(APP, "o-a").await.unwrap().unwrap().gender, None);
    assert_eq!(
        store.get(APP, "o-b").await.unwrap().unwrap().gender,
        Some(2)
    );
    assert_eq!(
        store.get(APP, "o-c").await.unwrap().unwrap().gender,
        Some(1)
    );
}

#[tokio::test]
async fn other_failures_are_database_errors() {
    let (dir, _path) = temp_db();
    // A directory cannot be opened as a database.
    let err = SqliteUserStore::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, UserStoreError::Database(_)), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_works_and_is_private() {
    let a = SqliteUserStore::open_in_memory().await.unwrap();
    let b = SqliteUserStore::open_in_memory().await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.upsert_login(APP, "o-1", None, None, None).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(a.get(APP, "o-1").await.unwrap().is_some());
    assert!(b.get(APP, "o-1").await.unwrap().is_none());
}

#[test]
fn user_serializes_with_snake_case_fields() {
    let user = User {
        app_id: "wx-a".into(),
        open_id: "o-1".into(),
        person_id: "0123456789abcdef0123456789abcdef".into(),
        union_id: Some("u-1".into()),
        nick_name: Some("Ada".into()),
        avatar_url: None,
        gender: Some(2),
        city: None,
        province: None,
        country: None,
        language: Some("zh_CN".into()),
        created_at: 10,
        updated_at: 11,
        last_login_at: Some(12),
        phone_number: Some("13800138000".into()),
        pure_phone_number: Some("13800138000".into()),
        country_code: Some("86".into()),
    };
    let json = serde_json::to_value(&user).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "app_id": "wx-a",
            "open_id": "o-1",
            "person_id": "0123456789abcdef0123456789abcdef",
            "union_id": "u-1",
            "nick_name": "Ada",
            "avatar_url": null,
            "gender": 2,
            "city": null,
            "province": null,
            "country": null,
            "language": "zh_CN",
            "created_at": 10,
            "updated_at": 11,
            "last_login_at": 12,
            "phone_number": "13800138000",
            "pure_phone_number": "13800138000",
            "country_code": "86"
        })
    );
}

#[test]
fn profile_accepts_wechat_user_info() {
    let profile: Profile = serde_json::from_str(
        r#"{"nickName":"Ada","avatarUrl":"https://example.invalid/a.png","gender":2,
            "city":"","province":"","country":"","language":"zh_CN"}"#,
    )
    .unwrap();
    assert_eq!(profile.nick_name.as_deref(), Some("Ada"));
    assert_eq!(
        profile.avatar_url.as_deref(),
        Some("https://example.invalid/a.png")
    );
    assert_eq!(profile.gender, Some(2));
    let snake: Profile = serde_json::from_str(r#"{"nick_name":"Ada"}"#).unwrap();
    assert_eq!(snake.nick_name.as_deref(), Some("Ada"));
    assert!(!snake.is_empty());
    assert!(Profile::default().is_empty());
}

/// The permission bits of `path`, in octal.
#[cfg(unix)]
fn mode(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    format!("{:o}", mode & 0o777)
}

/// `path` with `suffix` appended, as SQLite names its WAL and shared-memory files.
#[cfg(unix)]
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_database_and_its_wal_files_are_private() {
    let (_dir, path) = temp_db();
    let store = SqliteUserStore::open(&path).await.unwrap();
    store
        .upsert_login(APP, "o-private", None, Some(&full_profile()), None)
        .await
        .unwrap();
    // Both exist while the store holds connections.
    for file in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
        assert_eq!(mode(&file), "600", "{}", file.display());
    }
    drop(store);
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt as _;

    let (_dir, path) = temp_db();
    raw(&path).execute_batch(LEGACY_SCHEMA).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteUserStore::open(&path).await.unwrap();
    store
        .upsert_login(APP, "o-shared", None, None, None)
        .await
        .unwrap();
    assert_eq!(mode(&path), "640", "the owner's choice stands");
    // SQLite gives its WAL files the database's mode.
    assert_eq!(mode(&sibling(&path, "-wal")), "640");
    drop(store);
}

/// A Node-era file: the seed's table, several users, two of whom the Node package
/// stored with the same unionid (its rows carry none, so they are set by hand here as an
/// operator who added the column would have).
fn node_era_file(path: &Path) {
    let conn = raw(path);
    conn.execute_batch(LEGACY_SCHEMA).unwrap();
    conn.execute_batch(
        "ALTER TABLE user ADD COLUMN unionId text; \
         INSERT INTO user (openId, city, country, gender, language, nickName, province, unionId) VALUES \
         ('o-ada', 'Shenzhen', 'China', 2, 'zh_CN', 'Ada', 'Guangdong', 'u-ada'), \
         ('o-ada-alt', NULL, NULL, NULL, NULL, 'Ada again', NULL, 'u-ada'), \
         ('o-bob', 'Hangzhou', 'China', 1, 'zh_CN', 'Bob', 'Zhejiang', NULL);",
    )
    .unwrap();
}

#[tokio::test]
async fn a_node_era_file_without_a_legacy_app_id_is_refused_and_left_alone() {
    let (_dir, path) = temp_db();
    node_era_file(&path);
    let before = columns(&path);
    let err = SqliteUserStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, UserStoreError::LegacyAppIdNeeded),
        "{}",
        chain(&err)
    );
    assert!(err.to_string().contains("with_legacy_app_id"), "{err}");
    assert_eq!(columns(&path), before, "nothing was changed");
    let rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM user", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3);
    // An empty single-app table needs no app id.
    let (_dir, empty) = temp_db();
    raw(&empty).execute_batch(LEGACY_SCHEMA).unwrap();
    SqliteUserStore::open(&empty).await.unwrap();
    assert_eq!(columns(&empty), ALL_COLUMNS);
}

#[tokio::test]
async fn a_node_era_file_moves_into_the_app_keyed_table_losing_nothing() {
    let (_dir, path) = temp_db();
    node_era_file(&path);
    let store = open_legacy(&path).await.unwrap();
    assert_eq!(columns(&path), ALL_COLUMNS);

    let ada = store.get(APP, "o-ada").await.unwrap().expect("kept");
    assert_eq!(
        (
            ada.app_id.as_str(),
            ada.nick_name.as_deref(),
            ada.city.as_deref(),
            ada.province.as_deref(),
            ada.gender,
            ada.union_id.as_deref()
        ),
        (
            APP,
            Some("Ada"),
            Some("Shenzhen"),
            Some("Guangdong"),
            Some(2),
            Some("u-ada")
        )
    );
    let alt = store.get(APP, "o-ada-alt").await.unwrap().expect("kept");
    let bob = store.get(APP, "o-bob").await.unwrap().expect("kept");
    assert_eq!(bob.nick_name.as_deref(), Some("Bob"));
    // Rows sharing a unionid share a person; the others are persons of their own.
    assert_eq!(ada.person_id, alt.person_id);
    assert_ne!(ada.person_id, bob.person_id);
    for id in [&ada.person_id, &bob.person_id] {
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
    let person = store.person(&ada.person_id).await.unwrap();
    assert_eq!(
        person
            .iter()
            .map(|u| u.open_id.as_str())
            .collect::<Vec<_>>(),
        ["o-ada", "o-ada-alt"]
    );

    // The key is (app, openid) now: the same openid in another app is another user.
    let other = store
        .upsert_login("wx-other-app", "o-bob", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(other.app_id, "wx-other-app");
    assert_ne!(other.person_id, bob.person_id);
    assert_eq!(count_rows(&path, "o-bob"), 2);
    assert_eq!(
        store
            .get(APP, "o-bob")
            .await
            .unwrap()
            .unwrap()
            .nick_name
            .as_deref(),
        Some("Bob")
    );

    // Opening again, even without the legacy app id, finds nothing to do.
    drop(store);
    let store = SqliteUserStore::open(&path).await.unwrap();
    assert_eq!(store.get(APP, "o-ada").await.unwrap(), Some(ada));
}

#[tokio::test]
async fn a_row_a_legacy_writer_adds_after_the_migration_gets_a_person() {
    let (_dir, path) = temp_db();
    node_era_file(&path);
    drop(open_legacy(&path).await.unwrap());
    raw(&path)
        .execute(
            "INSERT INTO user (appId, openId, nickName) VALUES (?1, 'o-late', 'Late')",
            [APP],
        )
        .unwrap();
    let store = SqliteUserStore::open(&path).await.unwrap();
    let late = store.get(APP, "o-late").await.unwrap().unwrap();
    assert_eq!(late.person_id.len(), 32);
    assert_eq!(late.created_at, 0, "no time recorded by the legacy writer");
}
