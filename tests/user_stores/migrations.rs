//! Migrations on the database servers: a table an older version created (no phone
//! columns) gains them, keeping its rows.

use mpauthx::{MySqlUserStore, PostgresUserStore, UserStore};

use crate::{
    dbs::{MySql, Postgres},
    suite::phone,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_adds_the_phone_columns_to_an_older_table() {
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
    let store = PostgresUserStore::open(&db.url()).await.unwrap();
    let user = store.get("o-old").await.unwrap().expect("the row is kept");
    assert_eq!(
        (user.nick_name.as_deref(), user.created_at, user.updated_at),
        (Some("老用户"), 100, 200)
    );
    let bound = store
        .set_phone("o-old", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.phone(), Some(phone("13800138000")));
    // Opening again finds nothing to do.
    drop(PostgresUserStore::open(&db.url()).await.unwrap());
    let indexes =
        db.psql(r#"SELECT indexname FROM pg_indexes WHERE tablename = 'user' ORDER BY 1"#);
    assert!(indexes.contains("user_unionId"), "{indexes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_adds_the_phone_columns_to_an_older_table() {
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
    let store = MySqlUserStore::open(&db.url()).await.unwrap();
    let user = store.get("o-old").await.unwrap().expect("the row is kept");
    assert_eq!(
        (user.nick_name.as_deref(), user.created_at, user.updated_at),
        (Some("老用户"), 100, 200)
    );
    let bound = store
        .set_phone("o-old", &phone("13800138000"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bound.phone(), Some(phone("13800138000")));
    drop(MySqlUserStore::open(&db.url()).await.unwrap());
}
