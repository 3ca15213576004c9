//! One empty database per test, on each kind of store: a temporary sqlite file, or a
//! database of its own on the binary's PostgreSQL or MariaDB server. Rows are counted
//! through the servers' own clients, matching ids byte for byte (as hex).

use std::sync::atomic::{AtomicUsize, Ordering};

use mpauthx::{MySqlUserStore, PostgresUserStore, SqliteUserStore};
use tempfile::TempDir;

use crate::{
    common::{
        mariadb::{self, MariaDbServer},
        postgres::{self, PostgresServer},
        users,
    },
    suite::Db,
};

/// A database name unique in this process.
fn fresh_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Sqlite {
    _dir: TempDir,
    path: std::path::PathBuf,
}

impl Sqlite {
    pub fn new() -> Self {
        let (dir, path) = users::temp_db();
        Self { _dir: dir, path }
    }
}

impl Db for Sqlite {
    type Store = SqliteUserStore;

    async fn store(&self) -> SqliteUserStore {
        SqliteUserStore::open(&self.path).await.unwrap()
    }

    fn rows(&self, open_id: &str) -> i64 {
        users::count_rows(&self.path, open_id)
    }

    fn rows_in(&self, app_id: &str, open_id: &str) -> i64 {
        users::raw(&self.path)
            .query_row(
                "SELECT count(*) FROM user WHERE appId = ?1 AND openId = ?2",
                [app_id, open_id],
                |row| row.get(0),
            )
            .expect("count rows")
    }
}

pub struct Postgres {
    server: &'static PostgresServer,
    name: String,
}

impl Postgres {
    /// A new database on the shared server, owned by the application's role.
    pub async fn new() -> Self {
        let server = tokio::task::spawn_blocking(PostgresServer::shared)
            .await
            .unwrap();
        Self::on(server)
    }

    /// A new database whose transactions are REPEATABLE READ unless they say
    /// otherwise, as some operators configure PostgreSQL.
    pub async fn repeatable_read() -> Self {
        let db = Self::new().await;
        db.server.psql(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation TO 'repeatable read'",
            db.name
        ));
        db
    }

    pub fn on(server: &'static PostgresServer) -> Self {
        let name = fresh_name();
        server.psql(&format!("CREATE DATABASE {name} OWNER mpauthx"));
        Self { server, name }
    }

    /// Runs `sql` as the superuser in this database.
    pub fn psql(&self, sql: &str) -> String {
        self.server.psql_in(&self.name, sql)
    }

    /// [`psql`](Self::psql), with psql's error as `Err`.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.server.try_psql_in(&self.name, sql)
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://mpauthx:{}@127.0.0.1:{}/{}",
            postgres::PASSWORD,
            self.server.port(),
            self.name
        )
    }
}

impl Db for Postgres {
    type Store = PostgresUserStore;

    async fn store(&self) -> PostgresUserStore {
        PostgresUserStore::open(&self.url()).await.unwrap()
    }

    fn rows(&self, open_id: &str) -> i64 {
        let sql = format!(
            r#"SELECT count(*) FROM "user" WHERE encode(convert_to("openId", 'UTF8'), 'hex') = '{}'"#,
            hex::encode(open_id)
        );
        self.server
            .psql_in(&self.name, &sql)
            .trim()
            .parse()
            .unwrap()
    }

    fn rows_in(&self, app_id: &str, open_id: &str) -> i64 {
        let sql = format!(
            r#"SELECT count(*) FROM "user"
            WHERE encode(convert_to("appId", 'UTF8'), 'hex') = '{}'
            AND encode(convert_to("openId", 'UTF8'), 'hex') = '{}'"#,
            hex::encode(app_id),
            hex::encode(open_id)
        );
        self.server
            .psql_in(&self.name, &sql)
            .trim()
            .parse()
            .unwrap()
    }
}

pub struct MySql {
    server: &'static MariaDbServer,
    name: String,
}

impl MySql {
    /// A new database on the shared server, granted to the application's user.
    pub async fn new() -> Self {
        let server = tokio::task::spawn_blocking(MariaDbServer::shared)
            .await
            .unwrap();
        let name = fresh_name();
        server.sql(&format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4; GRANT ALL ON {name}.* TO 'mpauthx'@'%'"
        ));
        Self { server, name }
    }

    /// Another handle on the same database.
    pub fn on_same(other: &MySql) -> Self {
        Self {
            server: other.server,
            name: other.name.clone(),
        }
    }

    /// Runs `sql` as root in this database.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`sql`](Self::sql), with the client's error as `Err`.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.server.try_sql_in(Some(&self.name), sql)
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://mpauthx:{}@127.0.0.1:{}/{}",
            mariadb::PASSWORD,
            self.server.port(),
            self.name
        )
    }
}

impl Db for MySql {
    type Store = MySqlUserStore;

    async fn store(&self) -> MySqlUserStore {
        MySqlUserStore::open(&self.url()).await.unwrap()
    }

    fn rows(&self, open_id: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM `user` WHERE HEX(`openId`) = '{}'",
            hex::encode_upper(open_id)
        );
        let out = self.server.try_sql_in(Some(&self.name), &sql).unwrap();
        out.trim().parse().unwrap()
    }

    fn rows_in(&self, app_id: &str, open_id: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM `user` WHERE HEX(`appId`) = '{}' AND HEX(`openId`) = '{}'",
            hex::encode_upper(app_id),
            hex::encode_upper(open_id)
        );
        let out = self.server.try_sql_in(Some(&self.name), &sql).unwrap();
        out.trim().parse().unwrap()
    }
}

user_suite!(on_sqlite, crate::dbs::Sqlite::new());
user_suite!(on_postgres, crate::dbs::Postgres::new().await);
user_suite!(
    on_postgres_repeatable_read,
    crate::dbs::Postgres::repeatable_read().await
);
user_suite!(on_mysql, crate::dbs::MySql::new().await);
