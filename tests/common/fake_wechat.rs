//! A fake of WeChat's `jscode2session` endpoint: a real HTTP/1.1 server on 127.0.0.1,
//! and the fakes the suites log in against.
//!
//! Each connection gets its own thread so a deliberately slow reply does not hold up others.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use mpauthx::testing::WeChatSimulator;

use super::keys::session_key;

/// What the fake answers to one request.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub delay: Duration,
    pub extra_header: Option<String>,
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type: "application/json; charset=utf-8",
            body: body.into(),
            delay: Duration::ZERO,
            extra_header: None,
        }
    }

    /// WeChat often labels its JSON as `text/plain`.
    pub fn text_plain(body: impl Into<String>) -> Self {
        Self {
            content_type: "text/plain",
            ..Self::json(body)
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, header: impl Into<String>) -> Self {
        self.extra_header = Some(header.into());
        self
    }
}

/// One request as the fake saw it, query already percent-decoded.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The query as sent, still percent-encoded.
    pub raw_query: String,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

type Handler = dyn Fn(&Received, usize) -> Reply + Send + Sync;

pub struct FakeWeChat {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeWeChat {
    /// Starts the fake; `handler` gets each request and its 0-based index.
    pub fn start(handler: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let received = Arc::clone(&received);
                    let handler = Arc::clone(&handler);
                    thread::spawn(move || serve(stream, &received, handler.as_ref()));
                }
            })
        };
        Self {
            addr,
            received,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Always answers with the same JSON body.
    pub fn fixed(body: &'static str) -> Self {
        Self::start(move |_, _| Reply::json(body))
    }

    /// Answers as WeChat would for the app and users of `sim`.
    pub fn simulating(sim: &WeChatSimulator) -> Self {
        let sim = sim.clone();
        Self::start(move |request, _| Reply::json(sim.jscode2session_query(&request.raw_query)))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for FakeWeChat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the acceptor sees the stop flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(mut stream: TcpStream, received: &Mutex<Vec<Received>>, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let target = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let request = Received {
        path: path.to_owned(),
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        raw_query: query.to_owned(),
    };
    let index = {
        let mut all = received.lock().expect("lock");
        all.push(request.clone());
        all.len() - 1
    };
    let reply = handler(&request, index);
    thread::sleep(reply.delay);
    let extra = reply
        .extra_header
        .map(|h| format!("{h}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {} Fake\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{}",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.body
    );
    // The client may have given up already (timeout tests); that is expected.
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

/// The body of a successful exchange: `open_id`, [`session_key`] and maybe `union_id`.
pub fn session_body(open_id: &str, union_id: Option<&str>) -> String {
    let mut body = serde_json::json!({ "openid": open_id, "session_key": session_key() });
    if let Some(union_id) = union_id {
        body["unionid"] = union_id.into();
    }
    body.to_string()
}

/// A WeChat that accepts every code as a login of `open_id`.
pub fn wechat_ok(open_id: &str, union_id: Option<&str>) -> FakeWeChat {
    let body = session_body(open_id, union_id);
    FakeWeChat::start(move |_, _| Reply::json(body.clone()))
}

/// A WeChat that answers every code with `errcode`, its errmsg echoing the request's
/// secret and code (a hostile upstream: neither may leak into our errors).
pub fn wechat_errcode(errcode: i64) -> FakeWeChat {
    FakeWeChat::start(move |request: &Received, _| {
        Reply::json(
            serde_json::json!({
                "errcode": errcode,
                "errmsg": format!(
                    "echo secret={} code={}",
                    request.param("secret").unwrap_or(""),
                    request.param("js_code").unwrap_or("")
                ),
            })
            .to_string(),
        )
    })
}

/// A WeChat that accepts every code `<user>-<anything>` as a login of `<user>`.
pub fn wechat_by_code() -> FakeWeChat {
    FakeWeChat::start(|received, _| {
        let code = received.param("js_code").unwrap_or_default();
        let user = code.split('-').next().unwrap_or_default();
        Reply::json(session_body(user, None))
    })
}
