//! The crate's metrics, recorded by a recorder local to the test's thread: the counters
//! move by exactly what a flow does, and no label holds anything unbounded.

use std::{collections::HashMap, time::Duration};

use axum::{body::Body, http::Request};
use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder},
};
use mpauthx::{
    AuthorizeRequest, CachedTokenStore, LoginThrottle, MemoryRateLimiter, MemoryTokenStore, MpAuth,
    RateLimit, SignOutReason, SqliteUserStore,
};
use serde_json::json;
use tower::ServiceExt as _;

use crate::common::{
    http::{Answer, with_bearer},
    login::{config, router},
    sim, users,
};

/// The counters recorded, by name and sorted `key=value` labels.
fn counters(recorder: &DebuggingRecorder) -> HashMap<(String, Vec<String>), u64> {
    let mut out = HashMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        if let (MetricKind::Counter, DebugValue::Counter(n)) = (kind, value) {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            out.insert((key.name().to_owned(), labels), n);
        }
    }
    out
}

#[test]
fn the_counters_move_by_what_a_flow_does() {
    let recorder = DebuggingRecorder::new();
    let flow = async {
        let sim = sim::simulator();
        let base = sim::serve(&sim).await;
        let (_dir, db) = users::temp_db();
        let users = SqliteUserStore::open(&db).await.unwrap();
        let throttle = LoginThrottle::new(MemoryRateLimiter::new())
            .per_user(RateLimit::new(3, Duration::from_secs(60)).unwrap());
        let tokens =
            CachedTokenStore::new(MemoryTokenStore::new()).with_ttl(Duration::from_secs(30));
        let auth = MpAuth::builder(config().with_wechat_base_url(&base), tokens, users)
            .with_login_throttle(throttle)
            .build();
        let app = router(&auth);
        let send = |request: Request<Body>| {
            let app = app.clone();
            async move { Answer::collect(app.oneshot(request).await.unwrap()).await }
        };
        let login = || async {
            let code = sim.login("erin").unwrap().code;
            auth.authorize(&AuthorizeRequest::new(code)).await
        };
        let tokens = [
            login().await.unwrap().token.expose().to_owned(),
            login().await.unwrap().token.expose().to_owned(),
        ];
        let me = |token: &str| with_bearer(Request::get("/me"), token, Body::empty());
        // A miss, then two hits.
        for _ in 0..3 {
            assert_eq!(send(me(&tokens[0])).await.status, 200);
        }
        // A phone bind: one access_token fetch, one bind (it counts against the user's
        // login limit, which it then reaches).
        let code = sim.phone_code("erin", "13800138000").unwrap().code;
        let bind = with_bearer(
            Request::post("/auth/phone").header("content-type", "application/json"),
            &tokens[0],
            Body::from(json!({ "code": code }).to_string()),
        );
        assert_eq!(send(bind).await.status, 200);
        let refused = login().await.unwrap_err();
        assert_eq!(refused.oauth_error(), "too_many_requests");
        // A device signed out by id, then the user by the service.
        let devices = send(with_bearer(
            Request::get("/auth/devices"),
            &tokens[0],
            Body::empty(),
        ))
        .await;
        let other = devices.json()["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["current"] == false)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let path = format!("/auth/devices/{other}");
        let revoked = send(with_bearer(
            Request::delete(path.as_str()),
            &tokens[0],
            Body::empty(),
        ))
        .await;
        assert_eq!(revoked.status, 204);
        let open_id = sim.open_id("erin");
        let reason = SignOutReason::new("admin").unwrap();
        assert_eq!(auth.sign_out(&open_id, &reason).await.unwrap(), 1);
        assert_eq!(send(me(&tokens[0])).await.status, 401);
        assert_eq!(
            send(Request::get("/me").body(Body::empty()).unwrap())
                .await
                .status,
            401
        );
        open_id
    };
    let open_id = metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(flow)
    });

    let counters = counters(&recorder);
    let count = |name: &str, labels: &[&str]| {
        let labels = labels.iter().map(|l| (*l).to_owned()).collect();
        counters
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        count("mpauthx_logins_total", &["outcome=ok"]),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("mpauthx_logins_total", &["outcome=too_many_requests"]),
        1
    );
    assert_eq!(
        count("mpauthx_throttled_total", &["flow=login", "limit=user"]),
        1
    );
    assert_eq!(count("mpauthx_phone_binds_total", &["outcome=ok"]), 1);
    assert_eq!(
        count(
            "mpauthx_access_token_refreshes_total",
            &["mode=normal", "outcome=ok"]
        ),
        1
    );
    // Three /me, the bind, the device list and the revocation: six live tokens checked;
    // then one signed out and one without a token.
    let validations = "mpauthx_validations_total";
    assert_eq!(count(validations, &["outcome=ok"]), 6, "{counters:?}");
    assert_eq!(count(validations, &["outcome=signed_out"]), 1);
    assert_eq!(count(validations, &["outcome=missing"]), 1);
    assert_eq!(
        count("mpauthx_validation_cache_misses_total", &[]),
        2,
        "{counters:?}"
    );
    assert_eq!(
        count("mpauthx_validation_cache_hits_total", &["answer=live"]),
        5
    );
    assert_eq!(count("mpauthx_logouts_total", &["scope=device"]), 1);
    assert_eq!(count("mpauthx_logouts_total", &["scope=service"]), 1);
    assert!(
        count(
            "mpauthx_validation_cache_invalidations_total",
            &["cause=local"]
        ) >= 2
    );
    for (name, labels) in counters.keys() {
        for label in labels {
            assert!(!label.contains(&open_id), "{name} {label}");
            assert!(label.len() < 48, "{name}: an unbounded label? {label}");
        }
    }
}
