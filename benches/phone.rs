//! Phone binds and access-token refreshes, measured side by side in one run (see
//! BENCHMARKS.md, "Phone binds and access-token refreshes"; `benches/load.sh` runs it
//! too). `cargo bench --bench phone`.
//!
//! 1. Binds with a warm access token: `PHONE_BINDS` (2000) binds, `PHONE_CONCURRENCY`
//!    (16) at a time, through `MpAuth::bind_phone`, against the WeChat simulator served
//!    over HTTP on loopback, each with a phone code minted beforehand for a user logged in
//!    beforehand (untimed); the access token in memory, then in Redis. Beside them, the
//!    bare `WeChatClient::phone_number` call with a token fetched once (no manager, no
//!    store write). Each configuration has a simulator, a sqlite file and users of its own.
//! 2. Single-flight refreshes: `REFRESH_ROUNDS` (20) rounds, each on a cold cache (a fresh
//!    manager; in Redis a fresh key prefix) of one caller alone, then of 100 callers
//!    released at once by a barrier, timed from the release until the last has its token:
//!    100 on one memory manager, and 50 on each of two managers over two connections to
//!    one Redis (two servers).
//!
//! The Redis rows need `redis-server` on PATH: it is started on a free port in a temporary
//! directory, without persistence, and stopped on exit; without it they are skipped. It
//! prints markdown tables and the load averages before and after, and asserts nothing
//! about the figures: a round that called `stable_token` more than once is reported with a
//! warning line. It exits non-zero only when the setup fails.
//!
//! cargo passes `--bench` to every bench target; it is ignored here.

use std::{
    env,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    routing::{get, post},
    serve::ListenerExt as _,
};
#[path = "support/redis.rs"]
mod redis_server;

use mpauthx::{
    AccessTokenCache, AccessTokenManager, AuthedUser, AuthorizeRequest, MemoryTokenStore, MpAuth,
    MpAuthConfig, PhoneCode, RedisTokenStore, SqliteUserStore, WeChatClient,
    testing::{DEFAULT_MAX_CODES, WeChatSimulator},
};
use tokio::{sync::Barrier, task::JoinSet};

use self::redis_server::RedisServer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const APP_ID: &str = "wx0123456789abcdef";
const SECRET: &str = "APPSECRET-5f2b9c1e7d3a4b6c";
const SKU: &str = "demo";
const PHONE: &str = "13800138000";
/// Callers of each single-flight refresh.
const CALLERS: usize = 100;

fn knob(name: &str, default: usize) -> usize {
    env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let binds = knob("PHONE_BINDS", 2000);
    let concurrency = knob("PHONE_CONCURRENCY", 16);
    let rounds = knob("REFRESH_ROUNDS", 20);
    let before = load_average();
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("phone: {e}");
            std::process::exit(1);
        }
    };
    if redis.is_none() {
        eprintln!("phone: no redis-server on PATH; the Redis rows are skipped");
    }
    let url = redis.as_ref().map(RedisServer::url);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(run(url, before, binds, concurrency, rounds));
    drop(runtime);
    drop(redis);
    if let Err(e) = result {
        eprintln!("phone: {e}");
        std::process::exit(1);
    }
}

async fn run(
    url: Option<String>,
    before: String,
    binds: usize,
    concurrency: usize,
    rounds: usize,
) -> Result<()> {
    eprintln!("phone: {binds} binds per configuration, {concurrency} at a time");
    let bare = bare_calls(binds, concurrency).await?;
    let memory = binds_through_mpauth(None, binds, concurrency).await?;
    let in_redis = match &url {
        Some(url) => Some(binds_through_mpauth(Some(url), binds, concurrency).await?),
        None => None,
    };

    eprintln!("phone: {rounds} refresh rounds");
    let refresh = refreshes(url.as_deref(), rounds).await?;
    let after = load_average();

    println!();
    println!(
        "{} cores, {binds} binds per row, {concurrency} at a time, the simulator over HTTP on loopback; load average (1, 5, 15 min) {before} before, {after} after",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| phone binds, warm access token | binds/s | p50 ms | p99 ms | ratio to the bare call | stable_token calls | connections opened | failures |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    bare.row(
        "bare `WeChatClient::phone_number`, token fetched once",
        &bare,
    );
    memory.row("`MpAuth::bind_phone`, access token in memory", &bare);
    match &in_redis {
        Some(r) => r.row("`MpAuth::bind_phone`, access token in Redis", &bare),
        None => println!(
            "| `MpAuth::bind_phone`, access token in Redis | skipped: no redis-server | | | | | | |"
        ),
    }
    for (name, b) in [
        ("bare", Some(&bare)),
        ("memory", Some(&memory)),
        ("Redis", in_redis.as_ref()),
    ] {
        if let Some(b) = b
            && b.stable_token != 1
        {
            println!(
                "\nwarning: {name} binds called stable_token {} times, not once",
                b.stable_token
            );
        }
    }
    refresh.print(rounds);
    Ok(())
}

/// Latencies of one timed batch, and what the simulator saw.
struct Batch {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failures: usize,
    stable_token: u64,
    /// Connections the simulator accepted during the timed calls.
    connections: usize,
}

impl Batch {
    fn row(&self, name: &str, bare: &Batch) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            self.per_s,
            self.p50_ms,
            self.p99_ms,
            self.per_s / bare.per_s,
            self.stable_token,
            self.connections,
            self.failures
        );
    }
}

/// The value at quantile `q` (nearest rank) of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `job(0..count)`, `concurrency` at a time, each timed; binds/s, p50, p99 and the
/// jobs that returned false.
async fn drive<F, Fut>(count: usize, concurrency: usize, job: F) -> (f64, f64, f64, usize)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (job, next) = (Arc::clone(&job), Arc::clone(&next));
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return (latencies, failures);
                }
                let sent = Instant::now();
                let ok = job(n).await;
                latencies.push(sent.elapsed());
                failures += usize::from(!ok);
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    for (l, f) in workers.join_all().await {
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    (
        count as f64 / elapsed.as_secs_f64(),
        ms(quantile(&latencies, 0.50)),
        ms(quantile(&latencies, 0.99)),
        failures,
    )
}

/// A simulator of the bench app holding enough codes for `codes` of each kind.
fn simulator(codes: usize) -> WeChatSimulator {
    WeChatSimulator::new(APP_ID, SECRET).with_max_codes(DEFAULT_MAX_CODES.max(codes + 100))
}

/// Serves `sim`'s WeChat endpoints on a free loopback port; its base URL, and the count
/// of connections it has accepted.
async fn serve(sim: &WeChatSimulator) -> Result<(String, Arc<AtomicUsize>)> {
    let app = axum::Router::new()
        .route("/sns/jscode2session", get(sim.jscode2session_handler()))
        .route("/cgi-bin/stable_token", post(sim.stable_token_handler()))
        .route(
            "/wxa/business/getuserphonenumber",
            post(sim.phone_number_handler()),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, accepted))
}

fn config(base: &str) -> Result<MpAuthConfig> {
    Ok(MpAuthConfig::new(APP_ID, SECRET, SKU)?.with_wechat_base_url(base))
}

fn user(n: usize) -> String {
    format!("bench-{n}")
}

/// The baseline: the bare `getuserphonenumber` call, token fetched once.
async fn bare_calls(count: usize, concurrency: usize) -> Result<Batch> {
    let sim = simulator(count);
    let (base, accepted) = serve(&sim).await?;
    let client: WeChatClient = config(&base)?.wechat().clone();
    let token = client.stable_token(false).await?.token;
    let codes = (0..count)
        .map(|n| {
            let minted = sim.phone_code(&user(n), PHONE)?;
            Ok((PhoneCode::new(minted.code), minted.open_id))
        })
        .collect::<Result<Vec<_>>>()?;
    let codes = Arc::new(codes);
    let opened = accepted.load(Ordering::Relaxed);
    let (per_s, p50_ms, p99_ms, failures) = drive(count, concurrency, move |n| {
        let (code, open_id) = &codes[n];
        let call = client.phone_number(&token, code, Some(open_id));
        async move { call.await.is_ok_and(|p| p.pure_phone_number == PHONE) }
    })
    .await;
    Ok(Batch {
        per_s,
        p50_ms,
        p99_ms,
        failures,
        stable_token: sim.calls().stable_token,
        connections: accepted.load(Ordering::Relaxed) - opened,
    })
}

/// `MpAuth::bind_phone` with the access token in memory, or in the Redis at `redis`.
async fn binds_through_mpauth(
    redis: Option<&str>,
    count: usize,
    concurrency: usize,
) -> Result<Batch> {
    let sim = simulator(count);
    let (base, accepted) = serve(&sim).await?;
    let config = config(&base)?;
    let manager = match redis {
        None => AccessTokenManager::memory(config.wechat().clone()),
        Some(url) => {
            let store = redis_store(url, "bench-binds").await?;
            AccessTokenManager::redis(config.wechat().clone(), &store)
        }
    };
    let dir = tempfile::tempdir()?;
    let users = SqliteUserStore::open(dir.path().join("users.db")).await?;
    let auth = Arc::new(
        MpAuth::builder(config, MemoryTokenStore::new(), users)
            .with_access_tokens(manager)
            .build(),
    );

    // Untimed: log every user in, mint their phone codes, warm the access token.
    let logins = (0..count)
        .map(|n| Ok(sim.login(&user(n))?.code))
        .collect::<Result<Vec<_>>>()?;
    let logins = Arc::new(logins);
    let authed = Arc::new(std::sync::Mutex::new(vec![None; count]));
    let (a, l, u) = (Arc::clone(&auth), Arc::clone(&logins), Arc::clone(&authed));
    let (_, _, _, failed) = drive(count, concurrency, move |n| {
        let (auth, logins, authed) = (Arc::clone(&a), Arc::clone(&l), Arc::clone(&u));
        async move {
            let Ok(authorized) = auth.authorize(&AuthorizeRequest::new(&logins[n])).await else {
                return false;
            };
            let Ok(user) = auth.validate(authorized.token.expose()).await else {
                return false;
            };
            authed.lock().unwrap()[n] = Some(user);
            true
        }
    })
    .await;
    if failed > 0 {
        return Err(format!("{failed} logins failed").into());
    }
    let users: Vec<AuthedUser> = std::mem::take(&mut *authed.lock().unwrap())
        .into_iter()
        .map(|u| u.expect("every login succeeded"))
        .collect();
    let codes = (0..count)
        .map(|n| Ok(PhoneCode::new(sim.phone_code(&user(n), PHONE)?.code)))
        .collect::<Result<Vec<_>>>()?;
    auth.access_tokens().access_token().await?;

    let work = Arc::new((users, codes));
    let opened = accepted.load(Ordering::Relaxed);
    let (per_s, p50_ms, p99_ms, failures) = drive(count, concurrency, move |n| {
        let (auth, work) = (Arc::clone(&auth), Arc::clone(&work));
        async move {
            let (users, codes) = &*work;
            auth.bind_phone(&users[n], codes[n].clone())
                .await
                .is_ok_and(|p| p.pure_phone_number == PHONE)
        }
    })
    .await;
    Ok(Batch {
        per_s,
        p50_ms,
        p99_ms,
        failures,
        stable_token: sim.calls().stable_token,
        connections: accepted.load(Ordering::Relaxed) - opened,
    })
}

/// A store on `url` under `prefix`, its connection opened and used once.
async fn redis_store(url: &str, prefix: &str) -> Result<RedisTokenStore> {
    let store = RedisTokenStore::builder(url)
        .with_key_prefix(prefix)
        .build()
        .await?;
    // The first command of a connection pays for more than a round trip; not timed.
    store.load("wx-warm-up").await?;
    Ok(store)
}

/// One cold-cache refresh: `callers` tasks over `managers` (round robin) released at once;
/// the time from the first release until the last has its token, and when the last caller
/// of each manager had it, from the same release.
async fn cold_refresh(
    managers: &[AccessTokenManager],
    callers: usize,
) -> Result<(Duration, Vec<Duration>)> {
    let barrier = Arc::new(Barrier::new(callers));
    let mut tasks = JoinSet::new();
    for i in 0..callers {
        let which = i % managers.len();
        let (manager, barrier) = (managers[which].clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            let released = Instant::now();
            let token = manager.access_token().await;
            (which, released, Instant::now(), token)
        });
    }
    let mut released = None::<Instant>;
    let mut last = vec![None::<Instant>; managers.len()];
    for (which, start, end, token) in tasks.join_all().await {
        token?;
        released = Some(released.map_or(start, |r| r.min(start)));
        last[which] = Some(last[which].map_or(end, |l| l.max(end)));
    }
    let released = released.expect("at least one caller");
    let per_manager: Vec<Duration> = last
        .into_iter()
        .map(|l| l.expect("a caller per manager") - released)
        .collect();
    let total = per_manager.iter().copied().max().unwrap_or_default();
    Ok((total, per_manager))
}

/// Per round: the bare refresh and the stampede, and stable_token calls of each.
#[derive(Default)]
struct Series {
    single: Vec<Duration>,
    many: Vec<Duration>,
    single_calls: Vec<u64>,
    many_calls: Vec<u64>,
    /// Redis: the last caller of the manager that fetched, and of the other one.
    fetcher_last: Vec<Duration>,
    waiter_last: Vec<Duration>,
}

struct Refreshes {
    memory: Series,
    redis: Option<Series>,
}

async fn refreshes(redis: Option<&str>, rounds: usize) -> Result<Refreshes> {
    let sim = simulator(0);
    let client = config(&serve(&sim).await?.0)?.wechat().clone();
    // A first token, so that the client's connection to the simulator is open.
    client.stable_token(false).await?;
    let calls = || sim.calls().stable_token;
    let mut memory = Series::default();
    let mut in_redis = redis.map(|_| Series::default());
    for round in 0..rounds {
        let before = calls();
        let (single, _) = cold_refresh(&[AccessTokenManager::memory(client.clone())], 1).await?;
        let mid = calls();
        let (many, _) =
            cold_refresh(&[AccessTokenManager::memory(client.clone())], CALLERS).await?;
        memory.single.push(single);
        memory.many.push(many);
        memory.single_calls.push(mid - before);
        memory.many_calls.push(calls() - mid);

        if let (Some(url), Some(series)) = (redis, in_redis.as_mut()) {
            let alone = redis_store(url, &format!("bench-refresh-{round}-single")).await?;
            let prefix = format!("bench-refresh-{round}-many");
            let (a, b) = (
                redis_store(url, &prefix).await?,
                redis_store(url, &prefix).await?,
            );
            let managers = [
                AccessTokenManager::redis(client.clone(), &a),
                AccessTokenManager::redis(client.clone(), &b),
            ];
            let before = calls();
            let (single, _) =
                cold_refresh(&[AccessTokenManager::redis(client.clone(), &alone)], 1).await?;
            let mid = calls();
            let (many, per_manager) = cold_refresh(&managers, CALLERS).await?;
            series.single.push(single);
            series.many.push(many);
            series.single_calls.push(mid - before);
            series.many_calls.push(calls() - mid);
            // The manager whose last caller finished first is, but for noise, the one
            // that took the lock and fetched; the other polled.
            let (first, second) = (
                per_manager[0].min(per_manager[1]),
                per_manager[0].max(per_manager[1]),
            );
            series.fetcher_last.push(first);
            series.waiter_last.push(second);
        }
    }
    Ok(Refreshes {
        memory,
        redis: in_redis,
    })
}

fn median_p95(values: &[Duration]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort();
    (ms(quantile(&sorted, 0.50)), ms(quantile(&sorted, 0.95)))
}

impl Refreshes {
    fn print(&self, rounds: usize) {
        println!();
        println!(
            "| access_token() on a cold cache, {rounds} rounds | 1 caller: median ms | p95 ms | {CALLERS} callers: median ms | p95 ms | ratio of medians | stable_token calls per round (1 caller / {CALLERS}) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---|");
        self.memory
            .row(&format!("memory, {CALLERS} callers on one manager"));
        match &self.redis {
            Some(series) => series.row(&format!(
                "Redis, {} callers on each of two managers",
                CALLERS / 2
            )),
            None => println!(
                "| Redis, {} callers on each of two managers | skipped: no redis-server | | | | | |",
                CALLERS / 2
            ),
        }
        if let Some(series) = &self.redis {
            let (fetcher, fetcher_p95) = median_p95(&series.fetcher_last);
            let (waiter, waiter_p95) = median_p95(&series.waiter_last);
            println!();
            println!(
                "Redis, {CALLERS} callers: the last caller of the manager that fetched had its token after {fetcher:.2} ms (median; p95 {fetcher_p95:.2}), the last of the other manager after {waiter:.2} ms (p95 {waiter_p95:.2})."
            );
        }
        for (name, series) in [
            ("memory", Some(&self.memory)),
            ("Redis", self.redis.as_ref()),
        ] {
            let Some(series) = series else { continue };
            let over = series
                .single_calls
                .iter()
                .chain(&series.many_calls)
                .filter(|&&c| c > 1)
                .count();
            if over > 0 {
                println!(
                    "\nwarning: {name}: {over} measurement(s) called stable_token more than once"
                );
            }
        }
    }
}

impl Series {
    fn row(&self, name: &str) {
        let (single, single_p95) = median_p95(&self.single);
        let (many, many_p95) = median_p95(&self.many);
        let calls = |c: &[u64]| {
            if c.iter().all(|&n| n == c[0]) {
                format!("{} in every round", c[0])
            } else {
                c.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
            }
        };
        println!(
            "| {name} | {single:.2} | {single_p95:.2} | {many:.2} | {many_p95:.2} | {:.2} | {} / {} |",
            many / single,
            calls(&self.single_calls),
            calls(&self.many_calls)
        );
    }
}
