//! Micro-benchmarks of the work the layer does before any I/O: reading the bearer
//! header, parsing the token and hashing it, and the store's in-memory validation.
//!
//! `cargo bench --bench hot_path`

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use mpauthx::{IssueOptions, MemoryTokenStore, ParsedToken, Sku, Token, TokenStore};

fn token_parsing(c: &mut Criterion) {
    let sku = Sku::new("demo").unwrap();
    let token = Token::generate(&sku, "oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
    let text = token.expose().to_owned();

    c.bench_function("parse token", |b| {
        b.iter(|| ParsedToken::parse(black_box(&text)).unwrap())
    });
    c.bench_function("parse and hash token", |b| {
        b.iter(|| ParsedToken::parse(black_box(&text)).unwrap().hash())
    });
    c.bench_function("reject malformed token", |b| {
        b.iter(|| ParsedToken::parse(black_box("demo.not-a-token")).is_err())
    });
    c.bench_function("generate token", |b| {
        b.iter(|| Token::generate(&sku, black_box("oGZUI0egBJY1zhBYw2KhdUfwVJJE")).unwrap())
    });
}

fn memory_validation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sku = Sku::new("demo").unwrap();
    let store = MemoryTokenStore::new();
    let token = Token::generate(&sku, "oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
    runtime
        .block_on(store.issue(&token, &IssueOptions::new(Duration::from_secs(3600))))
        .unwrap();
    c.bench_function("memory store validate", |b| {
        b.iter(|| runtime.block_on(store.validate(&token.parsed())).unwrap())
    });
}

criterion_group!(benches, token_parsing, memory_validation);
criterion_main!(benches);
