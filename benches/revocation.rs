//! Cross-server revocation with the tracked validation cache (see BENCHMARKS.md, "The
//! tracked validation cache"; `benches/load.sh` runs it too).
//! `cargo bench --bench revocation` after `cargo build --release --example server`.
//!
//! Two example servers (the release binary, `SERVER_BINARY`, default
//! `target/release/examples/server`) on one `redis-server` of the bench's own, both with
//! `MPAUTHX_VALIDATION_CACHE=tracking`. Each of `REVOCATION_TRIALS` (1000) trials logs a
//! user in through the first, has the second answer the token from memory, logs it out
//! through the first, and from the moment the logout's 204 arrives polls the second
//! (`GET /me/ping`, one keep-alive connection) until it answers 401: the time that takes,
//! p50, p99 and max, idle and while `wrk` (`WRK_CONNECTIONS`, 32) loads the second server
//! with another user's token, beside the floor: one request's own time to the loaded
//! server. Then the Redis commands the second server sends per
//! validated request with a warm cache, over `WARM_REQUESTS` (10000) requests: `HGET`s,
//! and every command but the tracking heartbeats (`ROLE`).
//!
//! It prints markdown tables and the load averages before and after, asserts nothing
//! about the figures and exits non-zero only when the setup fails.
//!
//! cargo passes `--bench` to every bench target; it is ignored here.

#[path = "support/redis.rs"]
mod redis_server;

use std::{
    env,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use self::redis_server::RedisServer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn knob(name: &str, default: usize) -> usize {
    env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An example server process of the bench's own, stopped on drop.
struct Example {
    child: Child,
    base: String,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

impl Example {
    fn start(binary: &str, redis_url: &str) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = tempfile::tempdir()?;
        let child = Command::new(binary)
            .env_clear()
            .env("MPAUTHX_LISTEN", format!("127.0.0.1:{port}"))
            .env("MPAUTHX_REDIS_URL", redis_url)
            .env("MPAUTHX_VALIDATION_CACHE", "tracking")
            .env("MPAUTHX_DATABASE", dir.path().join("users.db"))
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {binary} (build it first: cargo build --release --example server): {e}"))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.get("/healthz", None).ok() != Some(200) {
            if Instant::now() > deadline {
                return Err("the example server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<u16> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = request.call()?;
        let status = response.status().as_u16();
        response.body_mut().read_to_vec()?;
        Ok(status)
    }

    fn post(&self, path: &str, token: Option<&str>, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut response = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .send(body.to_string())?,
            None => request.send_empty()?,
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Logs `user` in through the simulator; the token.
    fn log_in(&self, user: &str) -> Result<String> {
        let (status, minted) = self.post("/sim/login", None, Some(&json!({ "user": user })))?;
        if status != 200 {
            return Err(format!("/sim/login answered {status}").into());
        }
        let (status, authorized) = self.post("/auth/authorize", None, Some(&minted))?;
        match authorized["token"].as_str() {
            Some(token) if status == 200 => Ok(token.to_owned()),
            _ => Err(format!("/auth/authorize answered {status}").into()),
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Revocation latencies in ms, sorted.
fn trials(first: &Example, second: &Example, count: usize) -> Result<Vec<f64>> {
    let mut took = Vec::with_capacity(count);
    for i in 0..count {
        let token = first.log_in(&format!("revoked-{}", i % 64))?;
        // Answered by the second from memory: the first check caches it; the push of the
        // login itself may drop that answer, so it is checked again after a moment.
        for _ in 0..2 {
            if second.get("/me/ping", Some(&token))? != 200 {
                return Err("the second server refuses a fresh token".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (status, _) = first.post("/auth/logout", Some(&token), None)?;
        if status != 204 {
            return Err(format!("/auth/logout answered {status}").into());
        }
        let revoked = Instant::now();
        loop {
            match second.get("/me/ping", Some(&token))? {
                401 => break,
                200 if revoked.elapsed() < Duration::from_secs(5) => {}
                other => return Err(format!("the second server answered {other}").into()),
            }
        }
        took.push(revoked.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok(took)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `cmdstat_<name>:calls=` of `INFO commandstats`.
fn calls(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let binary =
        env::var("SERVER_BINARY").unwrap_or_else(|_| "target/release/examples/server".into());
    // Absolute: each server runs in a directory of its own.
    let binary = std::fs::canonicalize(&binary)
        .map_err(|e| {
            format!("no {binary} (build it first: cargo build --release --example server): {e}")
        })?
        .to_string_lossy()
        .into_owned();
    let count = knob("REVOCATION_TRIALS", 1000);
    let connections = knob("WRK_CONNECTIONS", 32);
    let warm_requests = knob("WARM_REQUESTS", 10_000);
    let redis =
        RedisServer::start()?.ok_or("the revocation benchmark needs redis-server on PATH")?;
    let first = Example::start(&binary, &redis.url())?;
    let second = Example::start(&binary, &redis.url())?;
    let before = loadavg();

    let idle = trials(&first, &second, count)?;

    let loader = first.log_in("loader")?;
    let wrk = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), "-d600s"])
        .args(["-H", &format!("Authorization: Bearer {loader}")])
        .arg(format!("{}/me/ping", second.base))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut wrk = wrk.map_err(|e| format!("the loaded rows need wrk: {e}"))?;
    std::thread::sleep(Duration::from_secs(2));
    // The floor: how long one request to the loaded server takes, revocation or not.
    let mut floor = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        if second.get("/me/ping", Some(&loader))? != 200 {
            return Err("the loaded server refused the loader's token".into());
        }
        floor.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    floor.sort_by(f64::total_cmp);
    let loaded = trials(&first, &second, count);
    let _ = wrk.kill();
    let _ = wrk.wait();
    let loaded = loaded?;

    // Redis commands per validated request with a warm cache.
    let client = redis::Client::open(redis.url())?;
    let mut conn = client.get_connection()?;
    let token = first.log_in("warm")?;
    for _ in 0..3 {
        second.get("/me/ping", Some(&token))?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = |conn: &mut redis::Connection| -> Result<String> {
        Ok(redis::cmd("INFO")
            .arg("commandstats")
            .query::<String>(conn)?)
    };
    let total = |info: &str| -> u64 {
        info.lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter(|l| !l.starts_with("info:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let start = info(&mut conn)?;
    for _ in 0..warm_requests {
        if second.get("/me/ping", Some(&token))? != 200 {
            return Err("the warm token was refused".into());
        }
    }
    let end = info(&mut conn)?;
    let hgets = calls(&end, "hget") - calls(&start, "hget");
    let roles = calls(&end, "role") - calls(&start, "role");
    let others = total(&end) - total(&start) - roles;
    let after = loadavg();

    println!(
        "Revocation through the first server until the second answers 401 ({count} trials each, ms):"
    );
    println!();
    println!("| | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (name, took) in [
        ("idle", &idle),
        (
            &*format!("second server under wrk, {connections} connections"),
            &loaded,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            percentile(took, 0.5),
            percentile(took, 0.99),
            took[took.len() - 1]
        );
    }
    println!(
        "| floor: one `GET /me/ping` to the loaded second server, {count} requests | {:.2} | {:.2} | {:.2} |",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99),
        floor[floor.len() - 1]
    );
    println!();
    println!(
        "Redis commands per validated request on the second server, warm cache ({warm_requests} requests):"
    );
    println!();
    println!(
        "| `HGET` (validations) | every command but the heartbeats | heartbeats (`ROLE`) meanwhile, all servers |"
    );
    println!("|---:|---:|---:|");
    println!(
        "| {:.4} | {:.4} | {roles} |",
        hgets as f64 / warm_requests as f64,
        others as f64 / warm_requests as f64
    );
    println!();
    println!("load average: {before} before, {after} after");
    Ok(())
}
