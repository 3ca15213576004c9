//! Migrations on the database servers: a single-app table an older version created (no
//! phone columns), or one shaped as the Node package's (no times either, several rows,
//! two sharing a unionid), is keyed by (app, openid) with the legacy app id: every row
//! kept, rows sharing a unionid one person, the others a person each. Without a legacy
//! app id a table with rows is refused and left as it was; servers opening at once
//! migrate once.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use mpauthx::{MySqlUserStore, PostgresUserStore, User, UserStore, UserStoreError};

use crate::{
    dbs::{MySql, Postgres},
    suite::{APP, Db, OTHER_APP, assert_person_id, phone},
};

/// The app the single-app rows belong to.
const LEGACY: &str = "wx-legacy";

/// The Node package's rows: openid, unionid, nickname.
const NODE_ROWS: [(&str, Option<&str>, &str); 5] = [
    ("o-n1", Some("u-shared"), "一"),
    ("o-n2", Some("u-shared"), "二"),
    ("o-n3", Some("u-own"), "三"),
    ("o-n4", None, "四"),
    ("o-n5", None, "五"),
];

fn node_inserts(quote: char) -> String {
    let q = |c: &str| format!("{quote}{c}{quote}");
    NODE_ROWS
        .iter()
        .map(|(open_id, union_id, nick)| {
            let union_id = union_id.map_or("NULL".to_owned(), |u| format!("'{u}'"));
            format!(
                "INSERT INTO {user} ({o}, {u}, {n}, {g}, {c}) VALUES ('{open_id}', {union_id}, '{nick}', 1, 'Shenzhen');",
                user = q("user"),
                o = q("openId"),
                u = q("unionId"),
                n = q("nickName"),
                g = q("gender"),
                c = q("city"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a store on a migrated Node table: every row kept with the legacy app id,
/// persons as the unionids say, the times set, the new key in force.
async fn assert_node_rows_migrated(store: &impl UserStore, db: &impl Db) -> Vec<User> {
    let mut users = Vec::new();
    for (open_id, union_id, nick) in NODE_ROWS {
        let user = store
            .get(LEGACY, open_id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{open_id} kept"));
        assert_eq!(user.app_id, LEGACY);
        assert_eq!(user.union_id.as_deref(), union_id);
        assert_eq!(user.nick_name.as_deref(), Some(nick));
        assert_eq!(
            (user.gender, user.city.as_deref()),
            (Some(1), Some("Shenzhen"))
        );
        assert!(
            user.created_at > 0 && user.updated_at == user.created_at,
            "{user:?}"
        );
        assert_eq!(user.last_login_at, None, "not seen yet");
        assert_person_id(&user.person_id);
        users.push(user);
    }
    assert_eq!(
        users[0].person_id, users[1].person_id,
        "one unionid, one person"
    );
    let persons: HashSet<_> = users[1..].iter().map(|u| &u.person_id).collect();
    assert_eq!(persons.len(), 4, "every other row a person of its own");
    assert_eq!(
        store.person(&users[0].person_id).await.unwrap(),
        users[..2].to_vec()
    );
    // The key is (app, openid): the same openid in another app is another user.
    let other = store
        .upsert_login(OTHER_APP, "o-n1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_ne!(other.person_id, users[0].person_id);
    assert_eq!(db.rows("o-n1"), 2);
    assert_eq!(db.rows_in(LEGACY, "o-n1"), 1);
    users
}

/// Every row of the table as text, in a stable order, for "nothing changed".
fn pg_dump(db: &Postgres) -> String {
    db.psql(
        r#"SELECT string_agg(c.column_name || ':' || c.data_type, ',' ORDER BY c.ordinal_position)
            FROM information_schema.columns AS c WHERE c.table_name = 'user'"#,
    ) + &db.psql(r#"SELECT u::text FROM "user" AS u ORDER BY "openId""#)
        + &db.psql(r#"SELECT indexdef FROM pg_indexes WHERE tablename = 'user' ORDER BY 1"#)
}

fn mysql_dump(db: &MySql) -> String {
    db.sql("SHOW CREATE TABLE `user`") + &db.sql("SELECT * FROM `user` ORDER BY `openId`")
}

const PG_NODE_TABLE: &str = r#"CREATE TABLE "user" ("openId" varchar(255) PRIMARY KEY NOT NULL,
    "city" text, "country" text, "gender" bigint, "language" text, "nickName" text,
    "province" text, "avatarUrl" text, "unionId" text);
    ALTER TABLE "user" OWNER TO mpauthx;"#;

const MYSQL_NODE_TABLE: &str = "CREATE TABLE `user` (`openId` varchar(255) NOT NULL PRIMARY KEY,
    `city` text, `country` text, `gender` bigint, `language` text, `nickName` text,
    `province` text, `avatarUrl` text, `unionId` varchar(255))
    DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keys_an_older_table_by_app_and_adds_the_phone_columns() {
    let db = Postgres::new().await;
    db.psql(
        r#"CREATE TABLE "user" ("openId" text PRIMARY KEY NOT NULL, "city" text,
            "country" text, "gender" bigint, "language" text, "nickName" text,
            "province" text, "avatarUrl" text, "unionId" text, "created_at" bigint,
            "updated_at" bigint, "last_login_at" bigint);
        ALTER TABLE "user" OWNER TO mpauthx;
        INSERT INTO "user" ("openId", "nickName", "created_at", "updated_at")
            VALUES ('o-old', '老用户', 100, 200);"#,
    );
    let store = PostgresUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .open()
        .await
        .unwrap();
    let user = store
        .get(LEGACY, "o-old")
        .await
        .unwrap()
        .expect("the row is kept");
    assert_eq!(
        (user.nick_name.as_deref(), user.created_at, user.updated_at),
        (Some("老用户"), 100, 200)
    );
    assert_person_id(&user.person_id);
    let bound = store
        .set_phone(LEGACY, "o-old", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.phone(), Some(phone("13800138000")));
    // Opening again, without the legacy app id, finds nothing to do.
    let again = PostgresUserStore::open(&db.url()).await.unwrap();
    assert_eq!(again.get(LEGACY, "o-old").await.unwrap(), Some(bound));
    let indexes =
        db.psql(r#"SELECT indexname FROM pg_indexes WHERE tablename = 'user' ORDER BY 1"#);
    assert!(indexes.contains("user_unionId"), "{indexes}");
    assert!(indexes.contains("user_personId"), "{indexes}");
    let key = db.psql(
        r#"SELECT pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = '"user"'::regclass AND contype = 'p'"#,
    );
    assert_eq!(key, r#"PRIMARY KEY ("appId", "openId")"#);
    let duplicate = db.try_psql(&format!(
        r#"INSERT INTO "user" ("appId", "openId", "personId") VALUES ('{LEGACY}', 'o-old', 'x')"#
    ));
    assert!(
        duplicate.as_ref().is_err_and(|e| e.contains("user_pkey")),
        "{duplicate:?}"
    );
}

/// Rows enough that keying them by app takes far longer than the query timeout of the
/// tests below (20 ms).
const BIG_ROWS: u32 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_a_table_past_the_query_timeout_within_the_migration_timeout() {
    let db = Postgres::new().await;
    db.psql(&format!(
        r#"{PG_NODE_TABLE}
        INSERT INTO "user" ("openId", "nickName", "unionId")
            SELECT 'o-big-' || n, 'n' || n, 'u-big-' || (n / 2) FROM generate_series(1, {BIG_ROWS}) AS n;"#
    ));
    // The table's columns and a digest of its rows (a dump of them all would be large).
    let fingerprint = || {
        db.psql(
            r#"SELECT string_agg(column_name::text, ',' ORDER BY column_name) FROM information_schema.columns
            WHERE table_name = 'user'"#,
        ) + &db.psql(r#"SELECT md5(string_agg(u::text, ',' ORDER BY "openId")) FROM "user" AS u"#)
    };
    let before = fingerprint();
    let quick = || {
        PostgresUserStore::builder(&db.url())
            .with_legacy_app_id(LEGACY)
            .with_query_timeout(Duration::from_millis(20))
    };
    // Too short a migration timeout: refused as a timeout, and rolled back whole.
    let cut = quick()
        .with_migration_timeout(Duration::from_millis(50))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(cut, UserStoreError::Timeout(_)), "{cut:?}");
    assert_eq!(fingerprint(), before, "the table is as it was");
    // The default: the query timeout does not cut the migration short.
    let store = quick().open().await.unwrap();
    let keyed = db.psql(&format!(
        r#"SELECT count(*) FROM "user" WHERE "appId" = '{LEGACY}'"#
    ));
    assert_eq!(keyed, BIG_ROWS.to_string());
    let persons = db.psql(r#"SELECT count(DISTINCT "personId") FROM "user""#);
    assert_eq!(persons, (BIG_ROWS / 2 + 1).to_string(), "one per unionid");
    let user = store.get(LEGACY, "o-big-7").await.unwrap().unwrap();
    assert_eq!(user.union_id.as_deref(), Some("u-big-3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_moves_a_node_table_into_the_legacy_app() {
    let db = Postgres::new().await;
    db.psql(&format!("{PG_NODE_TABLE}\n{}", node_inserts('"')));
    let store = PostgresUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .open()
        .await
        .unwrap();
    let users = assert_node_rows_migrated(&store, &db).await;
    // Opening again changes nobody.
    let again = PostgresUserStore::open(&db.url()).await.unwrap();
    for user in &users {
        assert_eq!(
            again.get(LEGACY, &user.open_id).await.unwrap().as_ref(),
            Some(user)
        );
    }
    // A late unionid joins the migrated person.
    let joined = again
        .upsert_login(LEGACY, "o-n4", Some("u-shared"), None, None)
        .await
        .unwrap();
    assert_eq!(joined.user.person_id, users[0].person_id);
    assert_eq!(joined.merged_from.as_ref(), Some(&users[3].person_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_needs_the_legacy_app_id_for_a_table_with_rows() {
    let db = Postgres::new().await;
    db.psql(&format!("{PG_NODE_TABLE}\n{}", node_inserts('"')));
    let before = pg_dump(&db);
    let error = PostgresUserStore::open(&db.url()).await.unwrap_err();
    assert!(
        matches!(error, UserStoreError::LegacyAppIdNeeded),
        "{error:?}"
    );
    assert_eq!(pg_dump(&db), before, "nothing changed");
    // An empty single-app table needs none.
    let empty = Postgres::new().await;
    empty.psql(PG_NODE_TABLE);
    let store = PostgresUserStore::open(&empty.url()).await.unwrap();
    store
        .upsert_login(APP, "o-new", None, None, None)
        .await
        .unwrap();
    assert_eq!(empty.rows_in(APP, "o-new"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_servers_opening_at_once_migrate_once() {
    let db = std::sync::Arc::new(Postgres::new().await);
    db.psql(&format!("{PG_NODE_TABLE}\n{}", node_inserts('"')));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = db.url();
        tasks.spawn(async move {
            PostgresUserStore::builder(&url)
                .with_legacy_app_id(LEGACY)
                .open()
                .await
        });
    }
    let stores: Vec<_> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|s| s.expect("every open works"))
        .collect();
    assert_node_rows_migrated(&stores[0], &*db).await;
    let persons: HashMap<_, _> = NODE_ROWS
        .iter()
        .map(|(open_id, ..)| {
            let sql = format!(r#"SELECT "personId" FROM "user" WHERE "openId" = '{open_id}' AND "appId" = '{LEGACY}'"#);
            (open_id, db.psql(&sql))
        })
        .collect();
    for store in &stores[1..] {
        for (open_id, person_id) in &persons {
            let user = store.get(LEGACY, open_id).await.unwrap().unwrap();
            assert_eq!(&user.person_id, person_id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_keys_an_older_table_by_app_and_adds_the_phone_columns() {
    let db = MySql::new().await;
    db.sql(
        "CREATE TABLE `user` (`openId` varchar(255) NOT NULL PRIMARY KEY, `city` text,
            `country` text, `gender` bigint, `language` text, `nickName` text,
            `province` text, `avatarUrl` text, `unionId` varchar(255), `created_at` bigint,
            `updated_at` bigint, `last_login_at` bigint, KEY `user_unionId` (`unionId`))
            DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
        INSERT INTO `user` (`openId`, `nickName`, `created_at`, `updated_at`)
            VALUES ('o-old', '老用户', 100, 200);",
    );
    let store = MySqlUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .open()
        .await
        .unwrap();
    let user = store
        .get(LEGACY, "o-old")
        .await
        .unwrap()
        .expect("the row is kept");
    assert_eq!(
        (user.nick_name.as_deref(), user.created_at, user.updated_at),
        (Some("老用户"), 100, 200)
    );
    assert_person_id(&user.person_id);
    let bound = store
        .set_phone(LEGACY, "o-old", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.phone(), Some(phone("13800138000")));
    let again = MySqlUserStore::open(&db.url()).await.unwrap();
    assert_eq!(again.get(LEGACY, "o-old").await.unwrap(), Some(bound));
    let key = db.sql(
        "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user' AND INDEX_NAME = 'PRIMARY'",
    );
    assert_eq!(key, "appId,openId");
    let indexes = db.sql(
        "SELECT GROUP_CONCAT(DISTINCT INDEX_NAME ORDER BY INDEX_NAME) FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'user'",
    );
    assert_eq!(indexes, "PRIMARY,user_personId,user_unionId");
    let duplicate = db.try_sql(&format!(
        "INSERT INTO `user` (`appId`, `openId`, `personId`) VALUES ('{LEGACY}', 'o-old', 'x')"
    ));
    assert!(
        duplicate
            .as_ref()
            .is_err_and(|e| e.contains("Duplicate entry")),
        "{duplicate:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_migrates_a_table_past_the_query_timeout() {
    let db = MySql::new().await;
    db.sql(&format!(
        "{MYSQL_NODE_TABLE}
        SET SESSION max_recursive_iterations = {BIG_ROWS};
        INSERT INTO `user` (`openId`, `nickName`, `unionId`)
            WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BIG_ROWS})
            SELECT CONCAT('o-big-', i), CONCAT('n', i), CONCAT('u-big-', i DIV 2) FROM n;"
    ));
    let store = MySqlUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .with_query_timeout(Duration::from_millis(20))
        .with_migration_timeout(Duration::from_secs(120))
        .open()
        .await
        .unwrap();
    let keyed = db.sql(&format!(
        "SELECT count(*) FROM `user` WHERE `appId` = '{LEGACY}'"
    ));
    assert_eq!(keyed.trim(), BIG_ROWS.to_string());
    let persons = db.sql("SELECT count(DISTINCT `personId`) FROM `user`");
    assert_eq!(
        persons.trim(),
        (BIG_ROWS / 2 + 1).to_string(),
        "one per unionid"
    );
    let user = store.get(LEGACY, "o-big-7").await.unwrap().unwrap();
    assert_eq!(user.union_id.as_deref(), Some("u-big-3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_moves_a_node_table_into_the_legacy_app() {
    let db = MySql::new().await;
    db.sql(&format!("{MYSQL_NODE_TABLE}\n{}", node_inserts('`')));
    let store = MySqlUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .open()
        .await
        .unwrap();
    let users = assert_node_rows_migrated(&store, &db).await;
    let again = MySqlUserStore::open(&db.url()).await.unwrap();
    for user in &users {
        assert_eq!(
            again.get(LEGACY, &user.open_id).await.unwrap().as_ref(),
            Some(user)
        );
    }
    let joined = again
        .upsert_login(LEGACY, "o-n4", Some("u-shared"), None, None)
        .await
        .unwrap();
    assert_eq!(joined.user.person_id, users[0].person_id);
    assert_eq!(joined.merged_from.as_ref(), Some(&users[3].person_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_needs_the_legacy_app_id_for_a_table_with_rows() {
    let db = MySql::new().await;
    db.sql(&format!("{MYSQL_NODE_TABLE}\n{}", node_inserts('`')));
    let before = mysql_dump(&db);
    let error = MySqlUserStore::open(&db.url()).await.unwrap_err();
    assert!(
        matches!(error, UserStoreError::LegacyAppIdNeeded),
        "{error:?}"
    );
    assert_eq!(mysql_dump(&db), before, "nothing changed");
    // The migration lock was released: a store with the app id migrates.
    let store = MySqlUserStore::builder(&db.url())
        .with_legacy_app_id(LEGACY)
        .open()
        .await
        .unwrap();
    assert_node_rows_migrated(&store, &db).await;
    // An empty single-app table needs none.
    let empty = MySql::new().await;
    empty.sql(MYSQL_NODE_TABLE);
    let store = MySqlUserStore::open(&empty.url()).await.unwrap();
    store
        .upsert_login(APP, "o-new", None, None, None)
        .await
        .unwrap();
    assert_eq!(empty.rows_in(APP, "o-new"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_servers_opening_at_once_migrate_once() {
    let db = std::sync::Arc::new(MySql::new().await);
    db.sql(&format!("{MYSQL_NODE_TABLE}\n{}", node_inserts('`')));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = db.url();
        tasks.spawn(async move {
            MySqlUserStore::builder(&url)
                .with_legacy_app_id(LEGACY)
                .open()
                .await
        });
    }
    let stores: Vec<_> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|s| s.expect("every open works"))
        .collect();
    let users = assert_node_rows_migrated(&stores[0], &*db).await;
    for store in &stores[1..] {
        for user in &users {
            assert_eq!(
                store.get(LEGACY, &user.open_id).await.unwrap().as_ref(),
                Some(user)
            );
        }
    }
}
