//! The load benchmark's helper, run by `benches/load.sh` (not a benchmark of its own):
//!
//! - `probe --redis URL`: issues one token through `RedisTokenStore` whose hash holds no
//!   NUL or newline byte, and prints `KEY <key>` and `FIELD <hex>`, for redis-benchmark.
//! - `fill --redis URL --users N --per-user K [--start S]`: writes N×K live tokens in the
//!   store's exact layout (one hash per user, field SHA-256, value `<expires>|<issued>|`),
//!   pipelined, and prints `SAMPLE <token>`, one of them, to validate through the server.
//! - `memory --redis URL --tokens N --per-user K`: `used_memory` before and after issuing
//!   N tokens through `RedisTokenStore` (64 at a time); prints `BYTES_PER_TOKEN <b>`.
//! - `users --db PATH --count N [--start S]`: inserts N users into the sqlite file.
//! - `login --base URL --count N --concurrency C [--profile] [--prefix P]`: mints N codes
//!   with `POST /sim/login` (untimed), then times N `POST /auth/authorize` from C
//!   threads; prints `LOGIN <per s> <p50 ms> <p99 ms> <failures>`.
//!
//! cargo passes `--bench` to every bench target; it is ignored here.

use std::{
    collections::HashMap,
    env,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use mpauthx::{IssueOptions, RedisTokenStore, Sku, SqliteUserStore, Token, TokenStore};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SKU: &str = "demo";
const TTL: Duration = Duration::from_secs(259_200);

fn main() {
    let args: Vec<String> = env::args().skip(1).filter(|a| a != "--bench").collect();
    let Some((command, rest)) = args.split_first() else {
        // `cargo bench` runs every bench target: nothing to do without a command.
        eprintln!(
            "fixture: a helper of benches/load.sh; usage: fixture probe|fill|memory|users|login [--option value]…"
        );
        return;
    };
    let mut options = HashMap::new();
    let mut rest = rest.iter();
    while let Some(name) = rest.next() {
        let name = name.trim_start_matches("--").to_owned();
        if name == "profile" {
            options.insert(name, "true".to_owned());
        } else {
            options.insert(name, rest.next().cloned().unwrap_or_default());
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = match command.as_str() {
        "probe" => runtime.block_on(probe(&options)),
        "fill" => runtime.block_on(fill(&options)),
        "memory" => runtime.block_on(memory(&options)),
        "users" => runtime.block_on(users(&options)),
        "login" => login(&options),
        other => Err(format!("unknown command {other}").into()),
    };
    if let Err(e) = result {
        eprintln!("fixture {command}: {e}");
        std::process::exit(1);
    }
}

fn text<'a>(options: &'a HashMap<String, String>, name: &str) -> Result<&'a str> {
    options
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("missing --{name}").into())
}

fn number(options: &HashMap<String, String>, name: &str, default: Option<usize>) -> Result<usize> {
    match (options.get(name), default) {
        (Some(n), _) => Ok(n.parse()?),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("missing --{name}").into()),
    }
}

fn open_id(n: usize) -> String {
    format!("oBench{n:022}")
}

fn sku() -> Sku {
    Sku::new(SKU).expect("a valid sku")
}

async fn probe(options: &HashMap<String, String>) -> Result<()> {
    let store = RedisTokenStore::connect(text(options, "redis")?).await?;
    let token = loop {
        let token = Token::generate(&sku(), "oBenchProbe")?;
        if !token
            .hash()
            .as_bytes()
            .iter()
            .any(|&b| b == 0 || b == b'\n')
        {
            break token;
        }
    };
    store.issue(&token, &IssueOptions::new(TTL)).await?;
    println!("KEY mpauthx:{{{SKU}:oBenchProbe}}");
    println!("FIELD {}", hex::encode(token.hash().as_bytes()));
    println!("TOKEN {}", token.expose());
    Ok(())
}

async fn fill(options: &HashMap<String, String>) -> Result<()> {
    let users = number(options, "users", None)?;
    let per_user = number(options, "per-user", Some(1))?;
    let start = number(options, "start", Some(0))?;
    let client = redis::Client::open(text(options, "redis")?)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let expires = now + TTL.as_millis() as u64;
    let value = format!("{expires}|{now}|");
    let sku = sku();
    let next = Arc::new(AtomicUsize::new(start));
    let end = start + users;
    let sample = Arc::new(Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (next, sample, sku, value) = (next.clone(), sample.clone(), sku.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            const BATCH: usize = 2_000;
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= end {
                    return Ok::<_, redis::RedisError>(());
                }
                let mut pipe = redis::pipe();
                let mut last = None;
                for n in first..(first + BATCH).min(end) {
                    let open_id = open_id(n);
                    // The example server keeps the simulator's tokens under `mpauthx-simulator`.
                    let key = format!("mpauthx-simulator:{{{SKU}:{open_id}}}");
                    for _ in 0..per_user {
                        let token = Token::generate(&sku, &open_id).expect("a valid openid");
                        pipe.cmd("HSET")
                            .arg(&key)
                            .arg(&token.hash().as_bytes()[..])
                            .arg(&value)
                            .ignore();
                        last = Some(token);
                    }
                    pipe.cmd("PEXPIREAT").arg(&key).arg(expires).ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                if let Some(token) = last {
                    *sample.lock().unwrap() = Some(token.into_exposed());
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sample = sample.lock().unwrap().take().ok_or("nothing filled")?;
    println!("SAMPLE {sample}");
    Ok(())
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or("no used_memory in INFO")?
        .trim()
        .parse()
        .map_err(Into::into)
}

async fn memory(options: &HashMap<String, String>) -> Result<()> {
    let url = text(options, "redis")?;
    let tokens = number(options, "tokens", None)?;
    let per_user = number(options, "per-user", Some(1))?.max(1);
    let store = RedisTokenStore::connect(url).await?;
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let before = used_memory(&mut conn).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (store, next, sku) = (store.clone(), next.clone(), sku());
        tasks.push(tokio::spawn(async move {
            let options = IssueOptions::new(TTL);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= tokens {
                    return Ok::<_, mpauthx::StoreError>(());
                }
                let token = Token::generate(&sku, &open_id(n / per_user)).expect("valid");
                store.issue(&token, &options).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let after = used_memory(&mut conn).await?;
    println!(
        "BYTES_PER_TOKEN {:.0}",
        (after - before) as f64 / tokens as f64
    );
    Ok(())
}

async fn users(options: &HashMap<String, String>) -> Result<()> {
    let path = text(options, "db")?.to_owned();
    let count = number(options, "count", None)?;
    let start = number(options, "start", Some(0))?;
    // Creates or migrates the schema, as the server does.
    drop(SqliteUserStore::open(&path).await?);
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut db = rusqlite::Connection::open(&path)?;
        db.busy_timeout(Duration::from_secs(10))?;
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO user (openId, nickName, gender, city, created_at, \
                 updated_at, last_login_at) VALUES (?1, ?2, 1, 'Guangzhou', ?3, ?3, ?3)",
            )?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
            for n in start..start + count {
                insert.execute(rusqlite::params![open_id(n), format!("user {n}"), now])?;
            }
        }
        tx.commit()?;
        // Fold the bulk insert into the database file now, rather than in the first
        // timed login's write.
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    })
    .await?
}

fn login(options: &HashMap<String, String>) -> Result<()> {
    let base = text(options, "base")?.trim_end_matches('/').to_owned();
    let count = number(options, "count", None)?;
    let concurrency = number(options, "concurrency", Some(16))?.max(1);
    let profile = options.contains_key("profile");
    let prefix = options
        .get("prefix")
        .cloned()
        .unwrap_or_else(|| "bench".into());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(concurrency)
        .build()
        .into();
    // Untimed: the mini-program's side, one fresh user per login.
    let mut bodies = Vec::with_capacity(count);
    for n in 0..count {
        let mint = format!(r#"{{"user": "{prefix}-{n}", "profile": {profile}}}"#);
        let mut response = agent
            .post(format!("{base}/sim/login"))
            .header("content-type", "application/json")
            .send(mint.as_str())?;
        if response.status() != 200 {
            return Err(format!("/sim/login answered {}", response.status()).into());
        }
        bodies.push(response.body_mut().read_to_string()?);
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (agent, bodies, next, base) =
                (agent.clone(), bodies.clone(), next.clone(), base.clone());
            thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(n) else {
                        return (latencies, failures);
                    };
                    let sent = Instant::now();
                    let ok = agent
                        .post(format!("{base}/auth/authorize"))
                        .header("content-type", "application/json")
                        .send(body.as_str())
                        .is_ok_and(|mut r| {
                            let ok = r.status() == 200;
                            let _ = r.body_mut().read_to_string();
                            ok
                        });
                    latencies.push(sent.elapsed());
                    failures += usize::from(!ok);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.join().map_err(|_| "a login thread panicked")?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "LOGIN {:.0} {:.2} {:.2} {failures}",
        count as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
    Ok(())
}
