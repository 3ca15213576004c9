//! Heap allocations per validated request through `MpAuthLayer`, counted by a global
//! allocator: the figure the named validation futures are about. Counts, not times, so
//! they do not depend on the machine's load.
//!
//! `cargo bench --bench allocations` measures the memory store and a validation-cache
//! hit; with `MPAUTHX_BENCH_REDIS_URL=redis://127.0.0.1:6379/` it measures
//! `RedisTokenStore` too (`benches/load.sh` passes its own Redis).

use std::{
    convert::Infallible,
    future::{Ready, ready},
};

use bytes::Bytes;
use http::{Request, Response, header::AUTHORIZATION};
use http_body_util::Full;
use mpauthx::{
    CachedTokenStore, IssueOptions, MemoryTokenStore, MpAuthLayer, RedisTokenStore, Sku, Token,
    TokenStore,
};
use tower::{Layer as _, Service, ServiceExt as _};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const REQUESTS: u64 = 10_000;

/// The innermost service: answers at once, allocating nothing itself.
#[derive(Clone)]
struct Pong;

impl Service<Request<()>> for Pong {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"pong")))))
    }
}

/// Allocations and bytes per request for `REQUESTS` validated requests; the requests
/// are built before counting starts.
async fn per_request<T: TokenStore>(store: T) -> (f64, f64) {
    let sku = Sku::new("bench").unwrap();
    let token = Token::generate(&sku, "o-bench").unwrap();
    store.issue(&token, &IssueOptions::default()).await.unwrap();
    let mut service = MpAuthLayer::new(store, sku).layer(Pong);
    let bearer = format!("Bearer {}", token.expose());
    let request = || {
        Request::get("/me/ping")
            .header(AUTHORIZATION, bearer.as_str())
            .body(())
            .unwrap()
    };
    for _ in 0..100 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let requests: Vec<_> = (0..REQUESTS).map(|_| request()).collect();
    let before = dhat::HeapStats::get();
    let mut responses = Vec::with_capacity(requests.len());
    for request in requests {
        responses.push(service.ready().await.unwrap().call(request).await.unwrap());
    }
    let after = dhat::HeapStats::get();
    let allocations = after.total_blocks - before.total_blocks;
    let bytes = after.total_bytes - before.total_bytes;
    assert!(responses.iter().all(|r| r.status() == 200));
    (
        allocations as f64 / REQUESTS as f64,
        bytes as f64 / REQUESTS as f64,
    )
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("allocations per validated request through MpAuthLayer ({REQUESTS} requests)");
        println!("| store | allocations | bytes |");
        println!("|---|---:|---:|");
        let (n, b) = per_request(MemoryTokenStore::new()).await;
        println!("| MemoryTokenStore | {n:.2} | {b:.0} |");
        let (n, b) = per_request(CachedTokenStore::new(MemoryTokenStore::new())).await;
        println!("| CachedTokenStore hit | {n:.2} | {b:.0} |");
        if let Ok(url) = std::env::var("MPAUTHX_BENCH_REDIS_URL") {
            let store = RedisTokenStore::connect(url).await.unwrap();
            let (n, b) = per_request(store).await;
            println!("| RedisTokenStore | {n:.2} | {b:.0} |");
        }
    });
}
