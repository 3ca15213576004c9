//! Micro-benchmarks of the work the layer does before any I/O: reading the bearer
//! header, parsing the token and hashing it, the store's in-memory validation, and the
//! validation cache (`CachedTokenStore`): a hit, and `revoke_all` (a stripe bump, O(1));
//! and a request through the layer, one sku's against an `MpApps` registry's (the live
//! list of its apps' skus, read on each request), side by side.
//!
//! `cargo bench --bench hot_path`

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use mpauthx::{
    CachedTokenStore, IssueOptions, MemoryTokenStore, MpApps, MpAuthConfig, MpAuthLayer,
    ParsedToken, Sku, SqliteUserStore, Token, TokenStore,
};
use tower::{Layer as _, ServiceExt as _};

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

fn validation_cache(c: &mut Criterion) {
    const CACHED: usize = 100_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sku = Sku::new("demo").unwrap();
    let store = CachedTokenStore::new(MemoryTokenStore::new())
        .with_ttl(Duration::from_secs(60))
        .with_capacity(CACHED);
    let options = IssueOptions::new(Duration::from_secs(3600));
    let tokens: Vec<Token> = (0..CACHED)
        .map(|i| Token::generate(&sku, &format!("o-user{i}")).unwrap())
        .collect();
    runtime.block_on(async {
        for token in &tokens {
            store.issue(token, &options).await.unwrap();
            assert!(store.validate(&token.parsed()).await.unwrap().is_live());
        }
    });
    let token = &tokens[0];
    c.bench_function("cached validate, hit", |b| {
        b.iter(|| runtime.block_on(store.validate(&token.parsed())).unwrap())
    });
    let cached = store.valid_len();
    c.bench_function(
        &format!("cached revoke_all, {cached} live tokens cached"),
        |b| {
            b.iter(|| {
                runtime
                    .block_on(store.revoke_all(&sku, black_box("o-nobody")))
                    .unwrap()
            })
        },
    );
}

/// One request with a live token through `layer`, to a service that answers at once:
/// what the layer adds, with the memory store answering synchronously.
fn layered_request(
    runtime: &tokio::runtime::Runtime,
    layer: &MpAuthLayer<MemoryTokenStore>,
    token: &str,
) -> http::StatusCode {
    let service = layer.layer(tower::service_fn(|_: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let request = http::Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(String::new())
        .unwrap();
    runtime.block_on(service.oneshot(request)).unwrap().status()
}

fn layer_skus(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = MemoryTokenStore::new();
    let users = runtime.block_on(SqliteUserStore::open_in_memory()).unwrap();
    let apps = MpApps::new(store.clone(), users);
    // The request's app is the last of eight: the registry's worst case.
    for i in 0..8 {
        let config = MpAuthConfig::new(format!("wx-app-{i}"), "secret", format!("app{i}")).unwrap();
        apps.insert(config).unwrap();
    }
    let sku = Sku::new("app7").unwrap();
    let token = Token::generate(&sku, "oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
    runtime
        .block_on(store.issue(&token, &IssueOptions::new(Duration::from_secs(3600))))
        .unwrap();
    let one = MpAuthLayer::new(store.clone(), sku);
    let registry = apps.layer();
    let subset = apps.layer_for(["wx-app-7"]).unwrap();
    for (name, layer) in [
        ("layer request, one sku", &one),
        ("layer request, registry of 8 apps", &registry),
        ("layer request, registry subset", &subset),
    ] {
        assert_eq!(layered_request(&runtime, layer, token.expose()), 200);
        c.bench_function(name, |b| {
            b.iter(|| layered_request(&runtime, layer, black_box(token.expose())))
        });
    }
}

criterion_group!(
    benches,
    token_parsing,
    memory_validation,
    validation_cache,
    layer_skus
);
criterion_main!(benches);
