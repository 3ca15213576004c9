//! sqlite user files in temporary directories, and counting their rows through a
//! connection of the test's own, so that assertions do not go through the code under test.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tempfile::TempDir;

/// A temporary directory and the path of a `users.db` in it (not created yet).
pub fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users.db");
    (dir, path)
}

/// A connection of the test's own.
pub fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("open raw connection")
}

/// Rows for `open_id`.
pub fn count_rows(path: &Path, open_id: &str) -> i64 {
    raw(path)
        .query_row(
            "SELECT count(*) FROM user WHERE openId = ?1",
            [open_id],
            |row| row.get(0),
        )
        .expect("count rows")
}

/// Every row in the table.
pub fn all_rows(path: &Path) -> i64 {
    raw(path)
        .query_row("SELECT count(*) FROM user", [], |row| row.get(0))
        .expect("count rows")
}
