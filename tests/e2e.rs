//! End to end: the example server, built and started as a process, walked over real
//! HTTP, once on its embedded defaults (memory store, built-in WeChat simulator) and
//! once on Redis with real-WeChat settings pointed at a simulator run by the test.
//! Also: bad settings exit 1 with one clear error, signals stop it gracefully, and
//! slow clients are cut off by the header read and request timeouts.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use axum::routing::{get, post};
use common::{RedisServer, free_port, http::Answer};
use mpauthx::testing::WeChatSimulator;
use serde_json::{Value, json};

/// How long the server may take to start listening, or to exit.
const PATIENCE: Duration = Duration::from_secs(20);

/// The example binary, built once per test run (`cargo build --example server`, which
/// the crate's self dev-dependency gives the `testing` feature).
fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // What cargo sets for this test process describes this package; build scripts
        // that watch those variables (ring's does) would rebuild on every run if the
        // nested cargo saw them.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let about_this_package = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name);
            if about_this_package {
                build.env_remove(&*name);
            }
        }
        let output = build
            .args([
                "build",
                "--example",
                "server",
                "--message-format=json-render-diagnostics",
                "--quiet",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(
            output.status.success(),
            "cargo build --example server failed"
        );
        // Cargo says where the executable is, whatever the target directory.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "server")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the server executable")
    })
}

/// The server's stdout and stderr, as they arrive.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Waits until the log holds `text`; fails the test, showing the log, if it does
    /// not within [`PATIENCE`].
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn follow(
        &self,
        stream: impl Read + Send + 'static,
        lines: mpsc::Sender<String>,
    ) -> JoinHandle<()> {
        let log = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                log.0.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = lines.send(line);
            }
        })
    }
}

/// A running example server; killed on drop, so none outlives its test.
struct Server {
    child: Child,
    log: Log,
    lines: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts the binary with exactly these settings (nothing inherited), in `dir`.
    fn spawn(settings: &[(&str, &str)], dir: &Path) -> Self {
        let mut command = Command::new(server_binary());
        command
            .env_clear()
            .env("RUST_LOG", "debug")
            .envs(settings.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the example server");
        let log = Log::default();
        let (sender, lines) = mpsc::channel();
        let readers = vec![
            log.follow(child.stdout.take().unwrap(), sender.clone()),
            log.follow(child.stderr.take().unwrap(), sender),
        ];
        Self {
            child,
            log,
            lines,
            readers,
        }
    }

    /// Starts the binary and waits until it listens; returns it and its base URL.
    fn start(settings: &[(&str, &str)], dir: &Path) -> (Self, Http) {
        let mut server = Self::spawn(settings, dir);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap().to_owned();
                        return (server, Http::new(format!("http://{addr}")));
                    }
                }
                Err(_) => {
                    let status = server.child.try_wait().unwrap();
                    panic!(
                        "the server did not start ({status:?}):\n{}",
                        server.log.text()
                    );
                }
            }
        }
    }

    /// Waits for the process to exit; its status and everything it wrote.
    fn wait(mut self, patience: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + patience;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {patience:?}:\n{}",
                self.log.text()
            );
            thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        (status, self.log.text())
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Answer {
    /// Asserts the status and the JSON `error` of a refusal.
    fn refused(&self, status: u16, error: &str) {
        assert_eq!(
            (self.status.as_u16(), self.json()["error"].as_str()),
            (status, Some(error)),
            "{}",
            self.body
        );
    }
}

/// A blocking HTTP client for one base URL.
struct Http {
    agent: ureq::Agent,
    base: String,
}

impl Http {
    fn new(base: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Self { agent, base }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call())
    }

    fn delete(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.agent.delete(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        Self::answer(request.call())
    }

    fn post(&self, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        Self::answer(match body {
            Some(body) => request
                .header("content-type", "application/json")
                .send(body.to_string()),
            None => request.send_empty(),
        })
    }

    /// `POST /auth/authorize` as a proxy would forward it for `client`.
    fn authorize_for(&self, body: &Value, forwarded_for: &str) -> Answer {
        let request = self
            .agent
            .post(format!("{}/auth/authorize", self.base))
            .header("x-forwarded-for", forwarded_for)
            .header("content-type", "application/json");
        Self::answer(request.send(body.to_string()))
    }

    /// `POST /auth/authorize` with these `X-Forwarded-For` lines, as they are (none, or
    /// several, or not text).
    fn authorize_with_lines(&self, body: &Value, lines: &[&[u8]]) -> Answer {
        let mut request = self
            .agent
            .post(format!("{}/auth/authorize", self.base))
            .header("content-type", "application/json");
        for line in lines {
            let value = http::HeaderValue::from_bytes(line).unwrap();
            request = request.header("x-forwarded-for", value);
        }
        Self::answer(request.send(body.to_string()))
    }

    fn answer(result: Result<http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let response = result.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().read_to_string().unwrap();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// What a login walk handed out: none of it may appear in the server's log.
#[derive(Default)]
struct Handed(Vec<String>);

/// Mints a login for `user` (at `mint`) and logs it in (at `server`) from `device`.
fn log_in(server: &Http, mint: &Http, user: &str, device: &str, handed: &mut Handed) -> String {
    let minted = mint.post("/sim/login", None, Some(&json!({ "user": user })));
    assert_eq!(minted.status, 200, "{}", minted.body);
    let mut body = minted.json();
    handed.0.push(body["code"].as_str().unwrap().to_owned());
    body["device"] = json!(device);
    let authorized = server.post("/auth/authorize", None, Some(&body));
    assert_eq!(authorized.status, 200, "{}", authorized.body);
    let token = authorized.json()["token"].as_str().unwrap().to_owned();
    handed.0.push(token.clone());
    token
}

/// The whole flow over HTTP. `mint` serves the simulator's `POST /sim/login`.
fn walk(server: &Http, mint: &Http, sku: &str, ttl: u64) -> Handed {
    let mut handed = Handed::default();

    let health = server.get("/healthz", None);
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        json!({ "status": "ok", "tokens": "ok", "users": "ok" })
    );
    let anonymous = server.get("/me", None);
    anonymous.refused(401, "missing_token");
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("Bearer")
    );

    // Log in with a profile: the code and the encrypted data a mini-program would send.
    let minted = mint.post(
        "/sim/login",
        None,
        Some(&json!({ "user": "alice", "profile": true })),
    );
    assert_eq!(minted.status, 200, "{}", minted.body);
    assert_eq!(minted.header("cache-control"), Some("no-store"));
    let login = minted.json();
    let code = login["code"].as_str().unwrap();
    let alice = login["open_id"].as_str().unwrap().to_owned();
    assert_eq!((code.len(), alice.len()), (32, 28));
    for field in ["encryptedData", "iv", "rawData", "signature"] {
        let value = login[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {login}"));
        handed.0.push(value.to_owned());
    }
    handed.0.push(code.to_owned());

    let authorized = server.post("/auth/authorize", None, Some(&login));
    assert_eq!(authorized.status, 200, "{}", authorized.body);
    assert_eq!(authorized.header("cache-control"), Some("no-store"));
    let body = authorized.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], ttl);
    let first = body["token"].as_str().unwrap().to_owned();
    assert!(first.starts_with(&format!("{sku}.{alice}.")), "{first}");
    handed.0.push(first.clone());

    // Codes are one-time.
    server
        .post("/auth/authorize", None, Some(&login))
        .refused(401, "invalid_code");

    let me = server.get("/me", Some(&first));
    assert_eq!(me.status, 200, "{}", me.body);
    let user = me.json();
    assert_eq!(user["open_id"], alice);
    assert_eq!(user["nick_name"], "alice");
    assert_eq!(user["language"], "zh_CN");
    assert_eq!(user["gender"], 0);
    // A unionid when the app's WeChat sends one (the simulator minted it), else none.
    assert_eq!(
        user["union_id"],
        login.get("union_id").cloned().unwrap_or(Value::Null)
    );
    assert_eq!(user["person_id"].as_str().map(str::len), Some(32), "{user}");

    // Refresh: a new token; the old one is rejected from now on.
    let refreshed = server.post("/auth/refresh", Some(&first), None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.header("cache-control"), Some("no-store"));
    let second = refreshed.json()["token"].as_str().unwrap().to_owned();
    handed.0.push(second.clone());
    assert_ne!(second, first);
    assert!(second.starts_with(&format!("{sku}.{alice}.")));
    let stale = server.get("/me", Some(&first));
    stale.refused(401, "invalid_token");
    let challenge = stale.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#));
    assert_eq!(server.get("/me", Some(&second)).json()["open_id"], alice);
    // Within the retry grace the rotated-out token refreshes once more (its client may
    // never have received `second`), and `second` gives way; a third try is refused.
    let retried = server.post("/auth/refresh", Some(&first), None);
    assert_eq!(retried.status, 200, "{}", retried.body);
    let third = retried.json()["token"].as_str().unwrap().to_owned();
    handed.0.push(third.clone());
    server
        .get("/me", Some(&second))
        .refused(401, "invalid_token");
    server
        .post("/auth/refresh", Some(&first), None)
        .refused(401, "invalid_token");
    server
        .post("/auth/refresh", Some(&second), None)
        .refused(401, "invalid_token");
    let second = third;
    assert_eq!(server.get("/me", Some(&second)).json()["open_id"], alice);

    // Log out: 204, and the token is rejected.
    let logout = server.post("/auth/logout", Some(&second), None);
    assert_eq!((logout.status.as_u16(), logout.body.as_str()), (204, ""));
    server
        .get("/me", Some(&second))
        .refused(401, "invalid_token");
    server
        .post("/auth/logout", Some(&second), None)
        .refused(401, "invalid_token");

    // Two devices of one user hold two live tokens; logging out one keeps the other.
    let phone = log_in(server, mint, "bob", "phone", &mut handed);
    let tablet = log_in(server, mint, "bob", "tablet", &mut handed);
    assert_ne!(phone, tablet);
    for token in [&phone, &tablet] {
        let me = server.get("/me", Some(token));
        assert_eq!(me.status, 200, "{}", me.body);
        let bob = me.json();
        assert_ne!(bob["open_id"], alice);
        assert_eq!(
            bob["nick_name"],
            Value::Null,
            "bob logged in without a profile"
        );
    }
    assert_eq!(server.post("/auth/logout", Some(&phone), None).status, 204);
    server
        .get("/me", Some(&phone))
        .refused(401, "invalid_token");
    assert_eq!(server.get("/me", Some(&tablet)).status, 200);

    // Logging out everywhere ends every device of that user, and only that user's.
    let laptop = log_in(server, mint, "bob", "laptop", &mut handed);
    let carol = log_in(server, mint, "carol", "phone", &mut handed);
    assert_eq!(
        server.post("/auth/logout_all", Some(&laptop), None).status,
        204
    );
    server
        .get("/me", Some(&tablet))
        .refused(401, "invalid_token");
    server
        .get("/me", Some(&laptop))
        .refused(401, "invalid_token");
    assert_eq!(server.get("/me", Some(&carol)).status, 200);

    // Devices: carol's one device, the current one.
    let devices = server.get("/auth/devices", Some(&carol));
    assert_eq!(devices.status, 200, "{}", devices.body);
    let listed = devices.json()["devices"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0]["device"], &listed[0]["current"]),
        (&json!("phone"), &json!(true))
    );

    // Phone numbers: a phone code from the simulator's button, bound to carol.
    let minted = mint.post(
        "/sim/phone",
        None,
        Some(&json!({ "user": "carol", "phone": "13800138000" })),
    );
    assert_eq!(minted.status, 200, "{}", minted.body);
    let phone_code = minted.json()["code"].as_str().unwrap().to_owned();
    handed.0.push(phone_code.clone());
    let bound = server.post(
        "/auth/phone",
        Some(&carol),
        Some(&json!({ "code": phone_code })),
    );
    assert_eq!(bound.status, 200, "{}", bound.body);
    assert_eq!(bound.header("cache-control"), Some("no-store"));
    assert_eq!(
        bound.json(),
        json!({"phone_number": "13800138000", "pure_phone_number": "13800138000", "country_code": "86"})
    );
    let me = server.get("/me", Some(&carol)).json();
    assert_eq!(
        (&me["phone_number"], &me["country_code"]),
        (&json!("13800138000"), &json!("86"))
    );
    server
        .post(
            "/auth/phone",
            Some(&carol),
            Some(&json!({ "code": phone_code })),
        )
        .refused(401, "invalid_phone_code");
    server
        .post("/auth/phone", Some(&carol), Some(&json!({})))
        .refused(400, "invalid_request");
    server
        .post("/auth/phone", None, Some(&json!({ "code": "x" })))
        .refused(401, "missing_token");
    // A login that binds its phone in the same request.
    let login = mint
        .post("/sim/login", None, Some(&json!({ "user": "dora" })))
        .json();
    let phone = mint
        .post(
            "/sim/phone",
            None,
            Some(&json!({ "user": "dora", "phone": "+1 4155550100" })),
        )
        .json();
    let code = login["code"].as_str().unwrap();
    let phone_code = phone["code"].as_str().unwrap();
    handed.0.extend([code.to_owned(), phone_code.to_owned()]);
    let both = server.post(
        "/auth/authorize",
        None,
        Some(&json!({ "code": code, "phone_code": phone_code })),
    );
    assert_eq!(both.status, 200, "{}", both.body);
    let body = both.json();
    assert_eq!(body["phone"]["phone_number"], "+1 4155550100");
    let dora = body["token"].as_str().unwrap().to_owned();
    handed.0.push(dora.clone());
    assert_eq!(
        server.get("/me", Some(&dora)).json()["pure_phone_number"],
        "4155550100"
    );

    // Bad input.
    server
        .post("/auth/authorize", None, Some(&json!({})))
        .refused(400, "invalid_request");
    server
        .post(
            "/auth/authorize",
            None,
            Some(&json!({ "code": "never-minted" })),
        )
        .refused(401, "invalid_code");
    server
        .get("/me", Some("not-a-token"))
        .refused(401, "invalid_token");
    mint.post("/sim/login", None, Some(&json!({ "user": "" })))
        .refused(400, "invalid_request");
    handed
}

/// Asserts that the log shows the flow and none of the handed-out secrets.
fn assert_clean_log(log: &str, handed: &Handed, secrets: &[&str]) {
    assert!(
        log.contains("mpauthx::"),
        "the crate's own logs are checked too:\n{log}"
    );
    assert!(log.contains("path=\"/auth/refresh\""), "{log}");
    for secret in handed
        .0
        .iter()
        .map(String::as_str)
        .chain(secrets.iter().copied())
    {
        assert!(!log.contains(secret), "the log leaks {secret:?}:\n{log}");
        // Tokens' secret parts alone, too.
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail), "the log leaks {tail:?}:\n{log}");
    }
}

#[test]
fn walk_on_embedded_defaults() {
    // No settings but a free port: in-memory tokens, ./mpauthx.db, the built-in simulator.
    let dir = tempfile::tempdir().unwrap();
    let (server, http) = Server::start(&[("MPAUTHX_LISTEN", "127.0.0.1:0")], dir.path());
    let handed = walk(&http, &http, "demo", 259_200);
    assert!(dir.path().join("mpauthx.db").is_file());
    // The simulator's own jscode2session, as WeChat answers an unknown code.
    let exchange = http.get(
        "/sim/sns/jscode2session?appid=wx-simulator&secret=wrong&js_code=x&grant_type=authorization_code",
        None,
    );
    assert_eq!(
        (
            exchange.status.as_u16(),
            exchange.json()["errcode"].as_i64()
        ),
        (200, Some(40125))
    );

    // The OpenAPI document: every operation it lists is mounted, and answers a request
    // without credentials (or with an empty body) with one of its documented statuses.
    let document = http.get("/openapi.json", None);
    assert_eq!(document.status, 200);
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "AAAA")
                .replace("{app_id}", "wx-simulator");
            let answer = match method.as_str() {
                "get" => http.get(&concrete, None),
                "post" => http.post(&concrete, None, Some(&json!({}))),
                "delete" => http.delete(&concrete, None),
                other => panic!("undocumented method {other}"),
            };
            let status = answer.status.as_str().to_owned();
            assert!(
                operation["responses"].get(&status).is_some(),
                "{method} {path} answered {status}, which its document does not list: {}",
                answer.body
            );
            if operation.get("security").is_some() {
                assert_eq!(answer.status, 401, "{method} {path} needs a token");
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 15, "every documented operation was tried");

    server.signal("-TERM");
    let (status, log) = server.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("built-in WeChat simulator"), "{log}");
    assert!(
        !log.contains("secret=wrong"),
        "queries are not logged:\n{log}"
    );
    assert_clean_log(&log, &handed, &[]);
}

/// The routes the example server mounts, read off its source: `(method, path)` of each
/// `.route("<path>", <method>(…))`, the simulator's `/sim` routes left out (they stand in
/// for WeChat and are not the crate's contract). Fails on a `.route(` it cannot read, so
/// that a route written another way is never silently missed.
fn mounted_routes() -> Vec<(String, String)> {
    let source = include_str!("../examples/server.rs");
    let mut routes = Vec::new();
    for (at, _) in source.match_indices(".route(") {
        let call = &source[at + ".route(".len()..];
        let call = call.trim_start();
        let path = call
            .strip_prefix('"')
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("a route whose path is not a literal: {}", &call[..40]));
        let after = call[path.len() + 2..].trim_start();
        let after = after
            .strip_prefix(',')
            .expect("a path, then a handler")
            .trim_start();
        let method = after.split('(').next().unwrap().trim();
        assert!(
            ["get", "post", "delete", "put", "patch"].contains(&method),
            "route {path}: a method router this test cannot read: {method:?}"
        );
        if !path.starts_with("/sim/") {
            routes.push((method.to_owned(), path.to_owned()));
        }
    }
    routes.sort();
    routes
}

#[test]
fn the_openapi_document_lists_exactly_the_mounted_routes() {
    let document: Value = serde_json::from_str(include_str!("../examples/openapi.json")).unwrap();
    let mut documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mounted = mounted_routes();
    assert!(mounted.len() >= 15, "{mounted:?}");
    assert_eq!(
        mounted, documented,
        "mounted (left) against documented (right)"
    );
}

/// One value of a Prometheus text exposition: the sample `name` with exactly these
/// labels (in any order), 0 if absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, mut have) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.trim_end_matches('}')
                    .split(',')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            ),
            None => (series, Vec::new()),
        };
        have.sort();
        if series_name == name && have == wanted {
            return value.parse().unwrap();
        }
    }
    0.0
}

#[test]
fn metrics_count_a_flow_by_the_right_amounts() {
    let dir = tempfile::tempdir().unwrap();
    let (server, http) = Server::start(&[("MPAUTHX_LISTEN", "127.0.0.1:0")], dir.path());
    let scrape = || {
        let answer = http.get("/metrics", None);
        assert_eq!(answer.status, 200);
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        answer.body
    };
    let before = scrape();

    // Two logins, one refused code, a refresh, requests with a good, a refused, a
    // malformed and no token, a logout, a logout everywhere.
    let mut handed = Handed::default();
    let first = log_in(&http, &http, "metered", "phone", &mut handed);
    let second = log_in(&http, &http, "metered", "tablet", &mut handed);
    http.post(
        "/auth/authorize",
        None,
        Some(&json!({ "code": "never-minted" })),
    )
    .refused(401, "invalid_code");
    let refreshed = http.post("/auth/refresh", Some(&first), None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let first = refreshed.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(http.get("/me", Some(&first)).status, 200);
    assert_eq!(http.get("/me/ping", Some(&second)).status, 200);
    http.get(
        "/me",
        Some("demo.o-nobody.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .refused(401, "invalid_token");
    http.get("/me", None).refused(401, "missing_token");
    assert_eq!(http.post("/auth/logout", Some(&second), None).status, 204);
    assert_eq!(
        http.post("/auth/logout_all", Some(&first), None).status,
        204
    );

    let after = scrape();
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let validations = "mpauthx_validations_total";
    assert_eq!(
        moved("mpauthx_logins_total", &[("outcome", "ok")]),
        2.0,
        "{after}"
    );
    assert_eq!(
        moved("mpauthx_logins_total", &[("outcome", "invalid_code")]),
        1.0
    );
    assert_eq!(moved("mpauthx_refreshes_total", &[("outcome", "ok")]), 1.0);
    assert_eq!(moved(validations, &[("outcome", "ok")]), 2.0, "{after}");
    assert_eq!(moved(validations, &[("outcome", "invalid")]), 1.0);
    assert_eq!(moved(validations, &[("outcome", "missing")]), 1.0);
    assert_eq!(moved("mpauthx_logouts_total", &[("scope", "token")]), 1.0);
    assert_eq!(moved("mpauthx_logouts_total", &[("scope", "all")]), 1.0);
    // Every login asked WeChat (the simulator) once: three jscode2session calls.
    let wechat = "mpauthx_wechat_request_duration_seconds_count";
    let ok = [("endpoint", "jscode2session"), ("outcome", "ok")];
    let refused = [("endpoint", "jscode2session"), ("outcome", "invalid_code")];
    assert_eq!(moved(wechat, &ok), 2.0, "{after}");
    assert_eq!(moved(wechat, &refused), 1.0);
    assert!(after.contains("mpauthx_wechat_request_duration_seconds_bucket{"));

    // No label holds an openid, a token or a code.
    for secret in handed.0.iter().chain([&first]) {
        assert!(!after.contains(secret.as_str()), "{secret} in the metrics");
    }
    assert!(
        !after.contains("metered"),
        "an openid in the metrics:\n{after}"
    );
    drop(server);
}

/// A WeChat simulator served by the test, standing in for api.weixin.qq.com.
struct OutsideWeChat {
    http: Http,
    sim: WeChatSimulator,
    _runtime: tokio::runtime::Runtime,
}

impl OutsideWeChat {
    fn start(app_id: &str, secret: &str) -> Self {
        Self::serve(WeChatSimulator::new(app_id, secret))
    }

    fn serve(sim: WeChatSimulator) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = axum::Router::new()
            .route("/sns/jscode2session", get(sim.jscode2session_handler()))
            .route("/cgi-bin/stable_token", post(sim.stable_token_handler()))
            .route(
                "/wxa/business/getuserphonenumber",
                post(sim.phone_number_handler()),
            )
            .route("/sim/login", post(sim.mint_handler()))
            .route("/sim/phone", post(sim.phone_mint_handler()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            http: Http::new(base),
            sim,
            _runtime: runtime,
        }
    }
}

#[test]
fn walk_on_redis_with_wechat_settings() {
    const SECRET: &str = "e2e-app-secret-3f9a";
    let mut redis = RedisServer::start();
    let wechat = OutsideWeChat::start("wx-e2e", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("users.db");
    let redis_url = redis.url();
    let (server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APP_ID", "wx-e2e"),
            ("MPAUTHX_APP_SECRET", SECRET),
            ("MPAUTHX_WECHAT_API", &wechat.http.base),
            ("MPAUTHX_REDIS_URL", &redis_url),
            ("MPAUTHX_SKU", "e2e"),
            ("MPAUTHX_TOKEN_TTL", "600"),
            ("MPAUTHX_DATABASE", database.to_str().unwrap()),
            // Everything, including the HTTP client's and server's own logs.
            ("RUST_LOG", "trace"),
        ],
        dir.path(),
    );
    // With an app secret there is no simulator on the server.
    assert_eq!(
        http.post("/sim/login", None, Some(&json!({ "user": "x" })))
            .status,
        404
    );

    let handed = walk(&http, &wechat.http, "e2e", 600);
    assert!(database.is_file());
    let keys = redis.keys();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .any(|k| k == "mpauthx:wechat:{wx-e2e}:access_token"),
        "the WeChat access token is shared in Redis: {keys:?}"
    );
    for key in &keys {
        assert!(
            key.starts_with("mpauthx:{e2e:") || key.starts_with("mpauthx:wechat:{wx-e2e}:"),
            "{key}"
        );
        for secret in &handed.0 {
            assert!(!key.contains(secret.rsplit('.').next().unwrap()), "{key}");
        }
    }

    // A Redis outage is 503, and the server recovers by itself.
    redis.stop();
    let health = http.get("/healthz", None);
    assert_eq!(
        (health.status.as_u16(), health.json()["tokens"].as_str()),
        (503, Some("unavailable"))
    );
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get("/healthz", None).status != 200 {
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        thread::sleep(Duration::from_millis(100));
    }

    server.signal("-INT");
    let (status, log) = server.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("tokens are kept in Redis"), "{log}");
    assert!(!log.contains("built-in WeChat simulator"), "{log}");
    assert_clean_log(&log, &handed, &[SECRET]);
}

/// Many servers, one user base: two example-server processes on one Redis and one
/// PostgreSQL, both logging users in with one (simulated) WeChat app.
#[test]
fn two_servers_share_users_in_postgres_and_tokens_in_redis() {
    const SECRET: &str = "e2e-app-secret-two-servers";
    let redis = RedisServer::start();
    let postgres = common::postgres::PostgresServer::start();
    let wechat = OutsideWeChat::start("wx-e2e-two", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let (redis_url, database) = (redis.url(), postgres.url());
    let settings = [
        ("MPAUTHX_LISTEN", "127.0.0.1:0"),
        ("MPAUTHX_APP_ID", "wx-e2e-two"),
        ("MPAUTHX_APP_SECRET", SECRET),
        ("MPAUTHX_WECHAT_API", wechat.http.base.as_str()),
        ("MPAUTHX_REDIS_URL", redis_url.as_str()),
        ("MPAUTHX_DATABASE", database.as_str()),
    ];
    let (first_server, first) = Server::start(&settings, dir.path());
    let (second_server, second) = Server::start(&settings, dir.path());
    let mut handed = Handed::default();

    // Login on the first: the second knows the user.
    let alice = log_in(&first, &wechat.http, "alice", "phone", &mut handed);
    let me = second.get("/me", Some(&alice));
    assert_eq!(me.status, 200, "{}", me.body);
    let alice_id = me.json()["open_id"].as_str().unwrap().to_owned();
    assert_eq!(alice_id, wechat.sim.open_id("alice"));

    // Refresh on the second: the old token is refused on the first.
    let refreshed = second.post("/auth/refresh", Some(&alice), None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let alice2 = refreshed.json()["token"].as_str().unwrap().to_owned();
    handed.0.push(alice2.clone());
    first.get("/me", Some(&alice)).refused(401, "invalid_token");
    assert_eq!(first.get("/me", Some(&alice2)).json()["open_id"], alice_id);

    // A second device through the second server; logout_all on the first ends both.
    let tablet = log_in(&second, &wechat.http, "alice", "tablet", &mut handed);
    assert_eq!(first.get("/me", Some(&tablet)).status, 200);
    assert_eq!(
        first.post("/auth/logout_all", Some(&alice2), None).status,
        204
    );
    for token in [&alice2, &tablet] {
        second.get("/me", Some(token)).refused(401, "invalid_token");
        first.get("/me", Some(token)).refused(401, "invalid_token");
    }

    // The validation cache tracks Redis (the default with Redis): a token the second
    // server answers from memory, logged out through the first, is refused by the
    // second within 50 ms.
    let laptop = log_in(&second, &wechat.http, "alice", "laptop", &mut handed);
    assert_eq!(second.get("/me", Some(&laptop)).status, 200);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(second.get("/me", Some(&laptop)).status, 200);
    assert_eq!(first.post("/auth/logout", Some(&laptop), None).status, 204);
    let since = Instant::now();
    while second.get("/me", Some(&laptop)).status != 401 {
        assert!(
            since.elapsed() < Duration::from_millis(50),
            "the second server still honours a token logged out on the first"
        );
    }

    // The phone bound through one is seen through the other; one access token serves
    // both servers (shared in Redis).
    let bob = log_in(&first, &wechat.http, "bob", "phone", &mut handed);
    for (server, number) in [(&first, "13800138000"), (&second, "13911112222")] {
        let minted = wechat.http.post(
            "/sim/phone",
            None,
            Some(&json!({ "user": "bob", "phone": number })),
        );
        let code = minted.json()["code"].as_str().unwrap().to_owned();
        handed.0.push(code.clone());
        let bound = server.post("/auth/phone", Some(&bob), Some(&json!({ "code": code })));
        assert_eq!(bound.status, 200, "{}", bound.body);
        let other = if std::ptr::eq(server, &first) {
            &second
        } else {
            &first
        };
        assert_eq!(
            other.get("/me", Some(&bob)).json()["pure_phone_number"],
            number
        );
    }
    assert_eq!(
        wechat.sim.calls().stable_token,
        1,
        "one access token for both servers"
    );
    let rows = postgres.psql(r#"SELECT count(*) FROM "user""#);
    assert_eq!(rows.trim(), "2", "alice and bob, once each");
    // A refresh through the first too, so that both logs show every kind of request.
    let refreshed = first.post("/auth/refresh", Some(&bob), None);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    handed
        .0
        .push(refreshed.json()["token"].as_str().unwrap().to_owned());

    for (server, http) in [(first_server, first), (second_server, second)] {
        drop(http);
        server.signal("-TERM");
        let (status, log) = server.wait(PATIENCE);
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(log.contains("postgres://***@127.0.0.1"), "{log}");
        assert_clean_log(&log, &handed, &[SECRET, common::postgres::PASSWORD]);
    }
}

#[test]
fn signals_stop_the_server_gracefully_and_promptly() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (server, http) = Server::start(&[("MPAUTHX_LISTEN", "127.0.0.1:0")], dir.path());
        // The agent keeps this connection open: an idle keep-alive must not delay exit.
        assert_eq!(http.get("/healthz", None).status, 200);
        let sent = Instant::now();
        server.signal(signal);
        let (status, log) = server.wait(PATIENCE);
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "{signal} took {:?}",
            sent.elapsed()
        );
        assert_eq!(status.code(), Some(0), "{signal}:\n{log}");
        let name = if signal == "-TERM" {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        assert!(log.contains(&format!("signal=\"{name}\"")), "{log}");
        assert!(log.contains("stopped"), "{log}");
    }
}

/// The simulator's tokens work nowhere else: a server logging users in with WeChat on
/// the same Redis and sku refuses them, because they live under a prefix of their own.
#[test]
fn simulator_tokens_are_refused_by_servers_that_use_wechat() {
    const SECRET: &str = "e2e-app-secret-sim";
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let wechat = OutsideWeChat::start("wx-real-app", SECRET);
    let dir = tempfile::tempdir().unwrap();
    let (_simulating, sim_http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_REDIS_URL", &redis_url),
            ("MPAUTHX_DATABASE", "sim.db"),
        ],
        dir.path(),
    );
    let (_real, real_http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APP_ID", "wx-real-app"),
            ("MPAUTHX_APP_SECRET", SECRET),
            ("MPAUTHX_WECHAT_API", &wechat.http.base),
            ("MPAUTHX_REDIS_URL", &redis_url),
            ("MPAUTHX_DATABASE", "real.db"),
        ],
        dir.path(),
    );
    let body = minted(&sim_http, "mallory");
    let authorized = sim_http.post("/auth/authorize", None, Some(&body));
    assert_eq!(authorized.status, 200, "{}", authorized.body);
    let token = authorized.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(sim_http.get("/me", Some(&token)).status, 200);
    real_http
        .get("/me", Some(&token))
        .refused(401, "invalid_token");
    let keys = redis.keys();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with("mpauthx-simulator:"), "{key}");
    }
}

/// A fresh login body for `user` from the server's simulator.
fn minted(http: &Http, user: &str) -> Value {
    let minted = http.post("/sim/login", None, Some(&json!({ "user": user })));
    assert_eq!(minted.status, 200, "{}", minted.body);
    minted.json()
}

#[test]
fn login_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    // Per peer address: two logins a minute from 127.0.0.1, then 429.
    let (server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_LOGIN_LIMIT_PER_CLIENT", "2/60"),
        ],
        dir.path(),
    );
    for user in ["ann", "ben"] {
        let body = minted(&http, user);
        assert_eq!(http.post("/auth/authorize", None, Some(&body)).status, 200);
    }
    let body = minted(&http, "cat");
    let refused = http.post("/auth/authorize", None, Some(&body));
    refused.refused(429, "too_many_requests");
    let retry_after: u64 = refused
        .header("retry-after")
        .unwrap_or_default()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    // WeChat (the simulator, on the same server) was asked for the two logins only.
    let log = server.log.text();
    let exchanges = log
        .lines()
        .filter(|line| line.contains("/sim/sns/jscode2session") && line.contains("served"))
        .count();
    assert_eq!(exchanges, 2, "{log}");
    drop(server);

    // Behind a proxy: the last X-Forwarded-For entry names the client; per user too.
    let (_server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_LOGIN_LIMIT_PER_CLIENT", "1/60"),
            ("MPAUTHX_LOGIN_LIMIT_PER_USER", "2/60"),
            ("MPAUTHX_CLIENT_IP_HEADER", "X-Forwarded-For"),
            ("MPAUTHX_DATABASE", "second.db"),
        ],
        dir.path(),
    );
    let login = |user: &str, chain: &str| http.authorize_for(&minted(&http, user), chain);
    assert_eq!(login("dan", "6.6.6.6, 10.0.0.1").status, 200);
    // The client-chosen first entry does not help: 10.0.0.1 is spent.
    login("eve", "7.7.7.7, 10.0.0.1").refused(429, "too_many_requests");
    assert_eq!(login("dan", "10.0.0.2").status, 200);
    // dan's third login, from a third address, is over the per-user limit.
    login("dan", "10.0.0.3").refused(429, "too_many_requests");
    drop(_server);

    // Nothing in the header lets a request escape the limit: without an address in
    // the last entry of the last line, the peer (127.0.0.1) counts.
    let (_server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_LOGIN_LIMIT_PER_CLIENT", "1/60"),
            ("MPAUTHX_CLIENT_IP_HEADER", "X-Forwarded-For"),
            ("MPAUTHX_DATABASE", "third.db"),
        ],
        dir.path(),
    );
    let login =
        |user: &str, lines: &[&[u8]]| http.authorize_with_lines(&minted(&http, user), lines);
    assert_eq!(login("fay", &[]).status, 200, "the peer's one login");
    for lines in [
        &[][..],
        &[&b"1.2.3.4,"[..]],
        &[b"1.2.3.4, "],
        &[b"\xff\xfe"],
        &[b"not-an-address"],
        &[b"6.6.6.6", b""],
    ] {
        login("gus", lines).refused(429, "too_many_requests");
    }
    // A proxy that appends a line: the last line's entry counts.
    assert_eq!(login("hal", &[b"9.9.9.9", b"10.0.0.7"]).status, 200);
    login("ida", &[b"10.0.0.7"]).refused(429, "too_many_requests");
    // IPv6 clients count by /64: another address of the same network is the same client.
    assert_eq!(login("joe", &[b"2001:db8:1:2::1"]).status, 200);
    login("kim", &[b"2001:db8:1:2::ffff"]).refused(429, "too_many_requests");
    assert_eq!(login("lee", &[b"2001:db8:1:3::1"]).status, 200);
    drop(_server);

    // From a peer that is not a trusted proxy the header is ignored: a client reaching
    // the server directly cannot name itself.
    let (_server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_LOGIN_LIMIT_PER_CLIENT", "1/60"),
            ("MPAUTHX_CLIENT_IP_HEADER", "X-Forwarded-For"),
            ("MPAUTHX_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16"),
            ("MPAUTHX_DATABASE", "fourth.db"),
        ],
        dir.path(),
    );
    let login = |user: &str, chain: &str| http.authorize_for(&minted(&http, user), chain);
    assert_eq!(login("max", "10.1.1.1").status, 200);
    login("ned", "10.1.1.2").refused(429, "too_many_requests");
}

#[test]
fn bad_settings_exit_1_with_one_clear_error() {
    const SECRET: &str = "never-print-me-7c1e";
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let unreachable_redis = format!("redis://:hunter2-redis-pw@127.0.0.1:{}/", free_port());
    // Passwords with the characters that end a URL's authority, and the multi-node forms.
    let (p1, p2) = (free_port(), free_port());
    let slash_password = format!("redis://:hunter2/x@127.0.0.1:{p1}/");
    let query_password = format!("redis://:hunter2?x@127.0.0.1:{p1}/");
    let hash_password = format!("redis://:hunter2#x@127.0.0.1:{p1}/");
    let cluster_password = format!("redis+cluster://:hunter2-c@127.0.0.1:{p1},127.0.0.1:{p2}");
    let sentinel_password = format!("redis+sentinel://:hunter2-s@127.0.0.1:{p1}/mymaster");
    let cases: &[(&str, &str, &str)] = &[
        ("MPAUTHX_LISTEN", "MPAUTHX_LISTEN", "localhost:port"),
        ("MPAUTHX_LISTEN", "MPAUTHX_LISTEN", &busy),
        ("MPAUTHX_TOKEN_TTL", "MPAUTHX_TOKEN_TTL", "soon"),
        ("MPAUTHX_TOKEN_TTL", "MPAUTHX_TOKEN_TTL", "0"),
        ("MPAUTHX_TOKEN_TTL", "MPAUTHX_TOKEN_TTL", "99999999999"),
        ("MPAUTHX_SKU", "MPAUTHX_SKU", "has.dot"),
        (
            "MPAUTHX_LOGIN_LIMIT_PER_CLIENT",
            "MPAUTHX_LOGIN_LIMIT_PER_CLIENT",
            "lots",
        ),
        (
            "MPAUTHX_LOGIN_LIMIT_PER_CLIENT",
            "MPAUTHX_LOGIN_LIMIT_PER_CLIENT",
            "0/60",
        ),
        (
            "MPAUTHX_LOGIN_LIMIT_PER_USER",
            "MPAUTHX_LOGIN_LIMIT_PER_USER",
            "5/100000",
        ),
        (
            "MPAUTHX_CLIENT_IP_HEADER",
            "MPAUTHX_CLIENT_IP_HEADER",
            "not a header",
        ),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &unreachable_redis),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &slash_password),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &query_password),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &hash_password),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &cluster_password),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", &sentinel_password),
        (
            "MPAUTHX_SESSION_MAX_AGE",
            "MPAUTHX_SESSION_MAX_AGE",
            "forever",
        ),
        ("MPAUTHX_SESSION_MAX_AGE", "MPAUTHX_SESSION_MAX_AGE", "0"),
        (
            "MPAUTHX_TRUSTED_PROXIES",
            "MPAUTHX_TRUSTED_PROXIES",
            "10.0.0.1,proxy",
        ),
        (
            "MPAUTHX_TRUSTED_PROXIES",
            "MPAUTHX_TRUSTED_PROXIES",
            "10.0.0.0/33",
        ),
        ("MPAUTHX_REDIS_URL", "MPAUTHX_REDIS_URL", "not a url"),
        (
            "MPAUTHX_DATABASE",
            "MPAUTHX_DATABASE",
            "/nonexistent/dir/x.db",
        ),
        (
            "MPAUTHX_WECHAT_API",
            "MPAUTHX_WECHAT_API",
            "ftp://api.example.com",
        ),
        (
            "MPAUTHX_HEADER_TIMEOUT_MS",
            "MPAUTHX_HEADER_TIMEOUT_MS",
            "0",
        ),
        (
            "MPAUTHX_HEADER_TIMEOUT_MS",
            "MPAUTHX_HEADER_TIMEOUT_MS",
            "10s",
        ),
        (
            "MPAUTHX_REQUEST_TIMEOUT_MS",
            "MPAUTHX_REQUEST_TIMEOUT_MS",
            "0",
        ),
        (
            "MPAUTHX_REQUEST_TIMEOUT_MS",
            "MPAUTHX_REQUEST_TIMEOUT_MS",
            "600001",
        ),
        (
            "MPAUTHX_VALIDATION_CACHE",
            "MPAUTHX_VALIDATION_CACHE",
            "sometimes",
        ),
        // Tracking needs Redis, which this run has not.
        (
            "MPAUTHX_VALIDATION_CACHE",
            "MPAUTHX_VALIDATION_CACHE",
            "tracking",
        ),
        (
            "MPAUTHX_VALIDATION_CACHE_MS",
            "MPAUTHX_VALIDATION_CACHE_MS",
            "60001",
        ),
        ("MPAUTHX_METRICS", "MPAUTHX_METRICS", "statsd"),
    ];
    let mut runs: Vec<(String, Vec<(&str, &str)>)> = cases
        .iter()
        .map(|&(named, variable, value)| {
            let settings = vec![
                ("MPAUTHX_LISTEN", "127.0.0.1:0"),
                ("MPAUTHX_APP_ID", "wx-e2e"),
                ("MPAUTHX_APP_SECRET", SECRET),
                (variable, value),
            ];
            (named.to_owned(), settings)
        })
        .collect();
    // A secret without an app id, and a WeChat API without a secret.
    runs.push((
        "MPAUTHX_APP_ID".into(),
        vec![
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APP_SECRET", SECRET),
        ],
    ));
    runs.push((
        "MPAUTHX_WECHAT_API".into(),
        vec![
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_WECHAT_API", "http://127.0.0.1:9/"),
        ],
    ));
    // A real app id whose secret failed to arrive: never a simulator under its name.
    for secret in [None, Some("")] {
        let mut settings = vec![
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APP_ID", "wx4f4bc4dec97d474b"),
        ];
        settings.extend(secret.map(|s| ("MPAUTHX_APP_SECRET", s)));
        runs.push(("MPAUTHX_APP_SECRET".into(), settings));
    }
    // Databases: unreachable servers (their passwords never printed), a URL of no known
    // kind, a malformed one, a pool size out of range.
    let unreachable_postgres = format!("postgres://mpauthx:hunter2-db@127.0.0.1:{p1}/users");
    let unreachable_mysql = format!("mysql://mpauthx:hunter2-db@127.0.0.1:{p2}/users");
    for (variable, value) in [
        ("MPAUTHX_DATABASE", unreachable_postgres.as_str()),
        ("MPAUTHX_DATABASE", unreachable_mysql.as_str()),
        (
            "MPAUTHX_DATABASE",
            "ftp://mpauthx:hunter2-db@127.0.0.1/users",
        ),
        (
            "MPAUTHX_DATABASE",
            "postgres://mpauthx:hunter2-db@[broken/users",
        ),
        ("MPAUTHX_DATABASE_MAX_CONNECTIONS", "0"),
    ] {
        runs.push((
            variable.into(),
            vec![("MPAUTHX_LISTEN", "127.0.0.1:0"), (variable, value)],
        ));
    }
    // Settings files: beside single-app settings, missing, not JSON, with a bad app
    // (the secrets in them never printed).
    let write_file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let good_app = format!(r#"{{"app_id": "wx-a", "app_secret": "{SECRET}", "sku": "a"}}"#);
    let files = [
        write_file("good.json", &format!(r#"{{"apps": [{good_app}]}}"#)),
        dir.path().join("missing.json").to_str().unwrap().to_owned(),
        write_file(
            "broken.json",
            &format!(r#"{{"apps": [{{"app_secret": "{SECRET}""#),
        ),
        write_file(
            "unknown-field.json",
            &format!(
                r#"{{"apps": [{{"app_id": "wx-a", "app_secret": "{SECRET}", "sku": "a", "secret_colour": "{SECRET}"}}]}}"#
            ),
        ),
        write_file(
            "bad-sku.json",
            &format!(
                r#"{{"apps": [{{"app_id": "wx-a", "app_secret": "{SECRET}", "sku": "has.dot"}}]}}"#
            ),
        ),
        write_file(
            "same-sku.json",
            &format!(
                r#"{{"apps": [{good_app}, {{"app_id": "wx-b", "app_secret": "{SECRET}", "sku": "a"}}]}}"#
            ),
        ),
        write_file("empty.json", r#"{"apps": []}"#),
    ];
    let files: &'static [String] = Vec::leak(files.to_vec());
    runs.push((
        "MPAUTHX_APPS_FILE".into(),
        vec![
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APPS_FILE", files[0].as_str()),
            ("MPAUTHX_APP_ID", "wx-e2e"),
            ("MPAUTHX_APP_SECRET", SECRET),
        ],
    ));
    for file in &files[1..] {
        runs.push((
            "MPAUTHX_APPS_FILE".into(),
            vec![
                ("MPAUTHX_LISTEN", "127.0.0.1:0"),
                ("MPAUTHX_APPS_FILE", file.as_str()),
            ],
        ));
    }
    // A client header with no per-client limit to apply it to.
    runs.push((
        "MPAUTHX_CLIENT_IP_HEADER".into(),
        vec![
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_CLIENT_IP_HEADER", "X-Forwarded-For"),
        ],
    ));

    // One process per case, all at once.
    let servers: Vec<_> = runs
        .iter()
        .map(|(_, settings)| Server::spawn(settings, dir.path()))
        .collect();
    for ((named, settings), server) in runs.iter().zip(servers) {
        let (status, log) = server.wait(PATIENCE);
        let case = format!("{settings:?}:\n{log}");
        assert_eq!(status.code(), Some(1), "{case}");
        let errors: Vec<_> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "one error line: {case}");
        assert!(
            errors[0].contains(named.as_str()),
            "the error names {named}: {case}"
        );
        assert!(!log.contains(SECRET), "the secret leaks: {case}");
        assert!(!log.contains("hunter2"), "a password leaks: {case}");
        assert!(!log.contains("listening on"), "{case}");
    }
    assert!(
        !dir.path().join("mpauthx.db").exists(),
        "bad settings create no database"
    );
}

/// Reads from `stream` until the server closes it or `patience` runs out; what arrived,
/// and whether the server closed the connection (end of stream or reset).
fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // A signal (the suites spawn processes) interrupted the read: read on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Our own read timeout: the server kept the connection open.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (received, false);
            }
            // Reset, aborted: the server hung up.
            Err(_) => return (received, true),
        }
    }
}

/// `GET /ping` over cleartext HTTP/2 with prior knowledge (h2c): status and body.
fn h2c_ping(addr: &str) -> (u16, String) {
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an HTTP/2 handshake");
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{addr}/ping"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("an HTTP/2 answer in time")
            .expect("an HTTP/2 answer");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

#[test]
fn slow_clients_are_cut_off_by_the_timeouts() {
    // The defaults are 10 s and 30 s; short ones keep the test quick.
    let timeout = Duration::from_secs(1);
    // Enough for a loaded CI machine, far below what a server without timeouts needs.
    let patience = Duration::from_secs(6);
    let dir = tempfile::tempdir().unwrap();
    let (server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_HEADER_TIMEOUT_MS", "1000"),
            ("MPAUTHX_REQUEST_TIMEOUT_MS", "1000"),
        ],
        dir.path(),
    );
    let addr = http.base.strip_prefix("http://").unwrap().to_owned();

    // Headers that never end, and a connection that never says anything (so neither
    // HTTP/1 nor HTTP/2): the server hangs up, without answering a request it never
    // got.
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let sent = Instant::now();
    let (received, closed) = read_until_closed(&mut stalled, patience);
    let waited = sent.elapsed();
    assert!(
        closed,
        "unfinished headers kept the connection open for {waited:?}"
    );
    assert!(
        waited >= timeout - Duration::from_millis(100),
        "closed after {waited:?}, before the timeout"
    );
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received:?}"
    );
    // Opened just before `stalled`, so it is due by now, give or take the margin.
    let (received, closed) = read_until_closed(&mut silent, Duration::from_secs(2));
    assert!(
        closed && received.is_empty(),
        "a silent connection was kept open for {:?}: {received:?}",
        sent.elapsed()
    );

    // A request whose body never arrives: answered 503 once it has run too long.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(
        b"POST /auth/authorize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"code\":",
    )
    .unwrap();
    let sent = Instant::now();
    slow.set_read_timeout(Some(patience)).unwrap();
    let mut head = String::new();
    let mut buf = [0u8; 1024];
    while !head.contains("\r\n\r\n") {
        match slow.read(&mut buf) {
            Ok(n) if n > 0 => head.push_str(&String::from_utf8_lossy(&buf[..n])),
            other => panic!("no answer after {:?} ({other:?}): {head:?}", sent.elapsed()),
        }
    }
    let waited = sent.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head:?}");
    assert!(
        waited >= timeout - Duration::from_millis(100),
        "answered after {waited:?}, before the timeout"
    );

    // Requests that are neither slow nor stalled are served as ever, over HTTP/1.1
    // and h2c.
    let pong = http.get("/ping", None);
    assert_eq!((pong.status.as_u16(), pong.body.as_str()), (200, "pong"));
    assert_eq!(http.get("/healthz", None).status, 200);
    assert_eq!(h2c_ping(&addr), (200, "pong".to_owned()));

    server.signal("-TERM");
    let (status, log) = server.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("path=\"/auth/authorize\"") && l.contains("status=503")),
        "the timed-out request is logged:\n{log}"
    );
}

/// Mints a login of `user` for `app` at the simulator `mint` and sends it to `path`: the
/// token.
fn log_into(server: &Http, mint: &Http, app: Option<&str>, user: &str, path: &str) -> String {
    let mut ask = json!({ "user": user });
    if let Some(app) = app {
        ask["app"] = json!(app);
    }
    let minted = mint.post("/sim/login", None, Some(&ask));
    assert_eq!(minted.status, 200, "{}", minted.body);
    let authorized = server.post(path, None, Some(&minted.json()));
    assert_eq!(authorized.status, 200, "{}", authorized.body);
    authorized.json()["token"].as_str().unwrap().to_owned()
}

#[test]
fn embedded_defaults_simulate_two_apps_with_one_person_and_move_a_node_era_table() {
    let dir = tempfile::tempdir().unwrap();
    // A Node-era users file: the seed's table, alice already in it (as the Node package
    // stored her in the first app).
    let alice_in_demo = WeChatSimulator::new("wx-simulator", "any").open_id("alice");
    {
        let conn = rusqlite::Connection::open(dir.path().join("mpauthx.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE user(openId text primary key not null, city text, country text, \
             gender integer, language text, nickName text, province text);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO user (openId, nickName, city) VALUES (?1, '老用户', 'Shenzhen')",
            [&alice_in_demo],
        )
        .unwrap();
    }
    let (server, http) = Server::start(&[("MPAUTHX_LISTEN", "127.0.0.1:0")], dir.path());

    // Alice in the first app (the default: plain /auth/authorize still logs into it)
    // and in the game, by its route.
    let demo = log_into(&http, &http, None, "alice", "/auth/authorize");
    let game = log_into(
        &http,
        &http,
        Some("wx-simulator-game"),
        "alice",
        "/apps/wx-simulator-game/auth/authorize",
    );
    assert!(
        demo.starts_with("demo.") && game.starts_with("game."),
        "{demo} {game}"
    );

    // Her Node-era row was moved, kept, and is her user in the first app.
    let me = http.get("/me", Some(&demo)).json();
    assert_eq!(
        (&me["app_id"], &me["open_id"], &me["nick_name"], &me["city"]),
        (
            &json!("wx-simulator"),
            &json!(alice_in_demo),
            &json!("老用户"),
            &json!("Shenzhen")
        )
    );
    let in_game = http.get("/me", Some(&game)).json();
    assert_eq!(in_game["app_id"], "wx-simulator-game");
    assert_ne!(in_game["open_id"], me["open_id"]);

    // One person in both: the unionid linked them, the old row included.
    let person = http.get("/me/person", Some(&game));
    assert_eq!(person.status, 200, "{}", person.body);
    let person = person.json();
    assert_eq!(person["person_id"], me["person_id"]);
    assert_eq!(person["person_id"], in_game["person_id"]);
    let apps: Vec<_> = person["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["app_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(apps, ["wx-simulator", "wx-simulator-game"]);

    // A code of one app is refused by the other (WeChat's 40029), and an unknown app
    // is 404.
    let minted = http
        .post("/sim/login", None, Some(&json!({ "user": "bob" })))
        .json();
    http.post(
        "/apps/wx-simulator-game/auth/authorize",
        None,
        Some(&minted),
    )
    .refused(401, "invalid_code");
    http.post("/apps/wx-nope/auth/authorize", None, Some(&minted))
        .refused(404, "unknown_app");

    server.signal("-TERM");
    let (status, log) = server.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn apps_from_a_settings_file_change_on_sighup() {
    const SHOP_SECRET: &str = "shop-secret-never-logged-1a";
    const GAME_SECRET: &str = "game-secret-never-logged-2b";
    let shop = OutsideWeChat::start("wx-e2e-shop", SHOP_SECRET);
    let game = OutsideWeChat::start("wx-e2e-game", GAME_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.json");
    let write = |apps: Value| {
        std::fs::write(&file, json!({ "apps": apps }).to_string()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    };
    let shop_app = json!({ "app_id": "wx-e2e-shop", "app_secret": SHOP_SECRET, "sku": "shop",
        "wechat_api": shop.http.base, "token_ttl": 600 });
    let game_app = json!({ "app_id": "wx-e2e-game", "app_secret": GAME_SECRET, "sku": "game",
        "wechat_api": game.http.base, "max_devices": 2 });
    write(json!([shop_app]));
    let (server, http) = Server::start(
        &[
            ("MPAUTHX_LISTEN", "127.0.0.1:0"),
            ("MPAUTHX_APPS_FILE", file.to_str().unwrap()),
            (
                "MPAUTHX_DATABASE",
                dir.path().join("users.db").to_str().unwrap(),
            ),
        ],
        dir.path(),
    );
    // No simulator on a server with real apps.
    assert_eq!(
        http.post("/sim/login", None, Some(&json!({ "user": "x" })))
            .status,
        404
    );
    let shop_token = log_into(
        &http,
        &shop.http,
        None,
        "ada",
        "/apps/wx-e2e-shop/auth/authorize",
    );
    assert_eq!(http.get("/me", Some(&shop_token)).status, 200);
    let minted = game
        .http
        .post("/sim/login", None, Some(&json!({ "user": "ada" })))
        .json();
    http.post("/apps/wx-e2e-game/auth/authorize", None, Some(&minted))
        .refused(404, "unknown_app");

    // The game comes, the shop goes: one SIGHUP.
    write(json!([game_app]));
    server.signal("-HUP");
    let deadline = Instant::now() + PATIENCE;
    let game_token = loop {
        let minted = game
            .http
            .post("/sim/login", None, Some(&json!({ "user": "ada" })))
            .json();
        let answer = http.post("/apps/wx-e2e-game/auth/authorize", None, Some(&minted));
        if answer.status == 200 {
            break answer.json()["token"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the game never came: {}",
            answer.body
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(game_token.starts_with("game."));
    assert_eq!(http.get("/me", Some(&game_token)).status, 200);
    http.get("/me", Some(&shop_token))
        .refused(401, "invalid_token");
    http.post("/auth/refresh", Some(&shop_token), None)
        .refused(401, "invalid_token");
    let minted = shop
        .http
        .post("/sim/login", None, Some(&json!({ "user": "ada" })))
        .json();
    http.post("/apps/wx-e2e-shop/auth/authorize", None, Some(&minted))
        .refused(404, "unknown_app");
    // The game is the only app now: a login that names none is its.
    let minted = game
        .http
        .post("/sim/login", None, Some(&json!({ "user": "bo" })))
        .json();
    let plain = http.post("/auth/authorize", None, Some(&minted));
    assert_eq!(plain.status, 200, "{}", plain.body);

    // A file that does not read changes nothing.
    std::fs::write(&file, "{\"apps\": [").unwrap();
    server.signal("-HUP");
    server.log.wait_for("the apps stay as they were");
    assert_eq!(http.get("/me", Some(&game_token)).status, 200);

    // The game asks for the shop's old sku: refused, since the shop's unexpired tokens
    // would pass as the game's. The game is served as it was.
    let mut game_as_shop = game_app.clone();
    game_as_shop["sku"] = json!("shop");
    write(json!([game_as_shop]));
    server.signal("-HUP");
    server.log.wait_for("is, or was, another app's");
    assert_eq!(http.get("/me", Some(&game_token)).status, 200);
    http.get("/me", Some(&shop_token))
        .refused(401, "invalid_token");
    // And the server still knows it serves the game: a file without it removes it,
    // while the shop comes back under its own sku (its old tokens with it).
    write(json!([shop_app]));
    server.signal("-HUP");
    let deadline = Instant::now() + PATIENCE;
    while http.get("/me", Some(&game_token)).status != 401 {
        assert!(
            Instant::now() < deadline,
            "the game stayed: {}",
            server.log.text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http.get("/me", Some(&shop_token)).status, 200);
    let minted = game
        .http
        .post("/sim/login", None, Some(&json!({ "user": "ada" })))
        .json();
    http.post("/apps/wx-e2e-game/auth/authorize", None, Some(&minted))
        .refused(404, "unknown_app");

    server.signal("-TERM");
    let (status, log) = server.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("SIGHUP: re-read MPAUTHX_APPS_FILE"), "{log}");
    for secret in [SHOP_SECRET, GAME_SECRET, &shop_token, &game_token] {
        assert!(!log.contains(secret), "the log leaks {secret}:\n{log}");
    }
}
