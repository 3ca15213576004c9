//! Replays the fuzz targets' committed inputs on stable Rust: every file under
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes through the same checks
//! the fuzz targets run (`fuzz/src/lib.rs`), so CI holds the targets' invariants without
//! nightly or libFuzzer.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

/// Every committed input of `target`: its seeds (at least one) and its regressions.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut seeds = files(&fuzz.join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds committed for {target}");
    seeds.extend(files(&fuzz.join("regressions").join(target)));
    seeds
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every input of `target`, naming each input that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in inputs(target) {
        let data = fs::read(&path).expect("a readable seed");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failed on {failed:#?}");
}

#[test]
fn token_parse_seeds() {
    replay("token_parse", checks::check_token_parse);
}

#[test]
fn auth_header_seeds() {
    replay("auth_header", checks::check_auth_header);
}

#[test]
fn phone_answer_seeds() {
    replay("phone_answer", checks::check_phone_answer);
}

#[test]
fn profile_decrypt_seeds() {
    replay("profile_decrypt", checks::check_profile_decrypt);
}

#[test]
fn profile_roundtrip_seeds() {
    replay("profile_roundtrip", checks::check_profile_roundtrip);
}

#[test]
fn authorize_body_seeds() {
    replay("authorize_body", checks::check_authorize_body);
}
