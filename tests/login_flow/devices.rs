//! Device management over HTTP: `GET /auth/devices` lists the caller's live tokens by
//! public id, `DELETE /auth/devices/{id}` signs one of the caller's own out.

use axum::{Router, body::Body, http::Request};
use mpauthx::{AuthorizeRequest, MemoryTokenStore, MpAuth, SqliteUserStore, TokenStore};
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
