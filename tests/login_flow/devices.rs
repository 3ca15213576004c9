//! Device management over HTTP: `GET /auth/devices` lists the caller's live tokens by
//! public id, `DELETE /auth/devices/{id}` signs one of the caller's own out.

use std::time::Duration;

use axum::{Router, body::Body, http::Request};
use mpauthx::{
    AuthorizeRequest, CachedTokenStore, MemoryTokenStore, MpAuth, SignOutReason, SqliteUserStore,
    TokenStore,
};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::common::{
    http::{Answer, with_bearer},
    keys::sku,
    login::{config, router},
    sim, users,
};

async fn send(app: &Router, request: Request<Body>) -> Answer {
    Answer::collect(app.clone().oneshot(request).await.unwrap()).await
}

#[tokio::test]
async fn devices_are_listed_and_one_is_signed_out_by_its_id() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (_dir, db) = users::temp_db();
    let users = SqliteUserStore::open(&db).await.unwrap();
    let auth = MpAuth::new(
        config().with_wechat_base_url(&base),
        MemoryTokenStore::new(),
        users,
    );
    let app = router(&auth);
    let login = |user: &'static str, device: &'static str| {
        let (auth, sim) = (auth.clone(), sim.clone());
        async move {
            let code = sim.login(user).unwrap().code;
            let request = AuthorizeRequest::new(code).with_device(device);
            auth.authorize(&request)
                .await
                .unwrap()
                .token
                .expose()
                .to_owned()
        }
    };
    let phone = login("ann", "Pixel 9").await;
    let tablet = login("ann", "iPad").await;
    let other = login("ben", "phone").await;

    let list = send(
        &app,
        with_bearer(Request::get("/auth/devices"), &phone, Body::empty()),
    )
    .await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.header("cache-control"), Some("no-store"));
    let devices = list.json()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2);
    let labels: Vec<_> = devices.iter().map(|d| d["device"].clone()).collect();
    assert_eq!(
        labels,
        [Value::from("Pixel 9"), Value::from("iPad")],
        "oldest first"
    );
    assert_eq!(
        devices
            .iter()
            .map(|d| d["current"] == true)
            .collect::<Vec<_>>(),
        [true, false]
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for device in &devices {
        let id = device["id"].as_str().unwrap();
        for token in [&phone, &tablet] {
            assert!(!token.contains(id) && !id.contains(token.rsplit('.').next().unwrap()));
        }
        let issued = device["issued_at"].as_u64().unwrap();
        let expires = device["expires_at"].as_u64().unwrap();
        assert!(
            issued <= now && now < expires,
            "seconds since the epoch: {device}"
        );
    }
    let tablet_id = devices[1]["id"].as_str().unwrap().to_owned();

    // Another user cannot sign ann's tablet out: 404, nothing revoked.
    let path = format!("/auth/devices/{tablet_id}");
    let refused = send(
        &app,
        with_bearer(Request::delete(&path), &other, Body::empty()),
    )
    .await;
    assert_eq!(
        (refused.status.as_u16(), refused.json()["error"].as_str()),
        (404, Some("unknown_device"))
    );
    assert!(auth.is_token_valid(&tablet).await.unwrap());
    for bad in [
        "/auth/devices/not-an-id",
        "/auth/devices/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let answer = send(
            &app,
            with_bearer(Request::delete(bad), &phone, Body::empty()),
        )
        .await;
        assert_eq!(answer.status, 404, "{bad}");
    }
    let unauthenticated = send(&app, Request::delete(&path).body(Body::empty()).unwrap()).await;
    assert_eq!(unauthenticated.status, 401);

    // Ann signs her tablet out from her phone.
    let done = send(
        &app,
        with_bearer(Request::delete(&path), &phone, Body::empty()),
    )
    .await;
    assert_eq!((done.status.as_u16(), done.body.as_str()), (204, ""));
    assert!(!auth.is_token_valid(&tablet).await.unwrap());
    assert!(auth.is_token_valid(&phone).await.unwrap());
    let again = send(
        &app,
        with_bearer(Request::delete(&path), &phone, Body::empty()),
    )
    .await;
    assert_eq!(again.status, 404, "already signed out");
    let left = auth
        .tokens()
        .list(&sku(), &sim.open_id("ann"))
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    let list = send(
        &app,
        with_bearer(Request::get("/auth/devices"), &tablet, Body::empty()),
    )
    .await;
    assert_eq!(list.status, 401, "the signed-out token lists nothing");
}

/// `MpAuth::sign_out`: the user's requests and refreshes are refused with the reason,
/// distinct from an expired token, and nobody else is touched; through a cache too.
#[tokio::test]
async fn a_user_signed_out_by_the_service_is_told_why() {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let (_dir, db) = users::temp_db();
    let users = SqliteUserStore::open(&db).await.unwrap();
    let tokens = CachedTokenStore::new(MemoryTokenStore::new()).with_ttl(Duration::from_secs(30));
    let auth = MpAuth::new(config().with_wechat_base_url(&base), tokens, users);
    let app = router(&auth);
    let login = |user: &'static str| {
        let (auth, sim) = (auth.clone(), sim.clone());
        async move {
            let code = sim.login(user).unwrap().code;
            let authorized = auth.authorize(&AuthorizeRequest::new(code)).await.unwrap();
            authorized.token.expose().to_owned()
        }
    };
    let (first, second, other) = (login("cat").await, login("cat").await, login("dan").await);
    let me = |token: &str| with_bearer(Request::get("/me"), token, Body::empty());
    // Cached as live, before the sign-out.
    assert_eq!(send(&app, me(&first)).await.status, 200);

    let open_id = auth.extract_open_id(&first).unwrap().to_owned();
    let reason = SignOutReason::new("account_suspended").unwrap();
    assert_eq!(auth.sign_out(&open_id, &reason).await.unwrap(), 2);

    for token in [&first, &second] {
        let answer = send(&app, me(token)).await;
        assert_eq!(answer.status, 401, "{answer:?}");
        let body = answer.json();
        assert_eq!(body["error"], "signed_out");
        assert_eq!(body["reason"], "account_suspended");
        assert_eq!(body["code"], 6007);
        let challenge = answer.header("www-authenticate").unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        let refresh = send(
            &app,
            with_bearer(Request::post("/auth/refresh"), token, Body::empty()),
        )
        .await;
        assert_eq!(refresh.status, 401, "{refresh:?}");
        assert_eq!(refresh.json()["reason"], "account_suspended");
        assert!(matches!(
            auth.validate(token).await,
            Err(mpauthx::Error::SignedOut(r)) if r == reason
        ));
    }
    assert_eq!(
        send(&app, me(&other)).await.status,
        200,
        "another user stays"
    );

    // A plain logout is not a sign-out: its token is just invalid.
    let logged_out = login("dan").await;
    auth.logout(&logged_out).await.unwrap();
    let answer = send(&app, me(&logged_out)).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token");
    assert!(answer.json().get("reason").is_none());
    // Logging in again works at once.
    let again = login("cat").await;
    assert_eq!(send(&app, me(&again)).await.status, 200);
}
