//! The user store suite, generic over the store: sqlite, PostgreSQL and MySQL must all
//! pass it. `user_suite!(name, <expression making a fresh Db>)` adds one test per case
//! in a module `name`; a `Db` makes stores on one empty database and counts its rows
//! through a connection of its own.

use std::{collections::HashSet, sync::Arc, time::Duration};

use mpauthx::{
    AuthorizeRequest, MemoryTokenStore, MpAuth, PhoneNumber, Profile, UserStore, UserStoreError,
};

use crate::common::{login::config, sim};

/// One empty database of one kind.
pub trait Db: Send + Sync + 'static {
    type Store: UserStore;
    /// A store on the database (each call its own pool).
    fn store(&self) -> impl std::future::Future<Output = Self::Store> + Send;
    /// The rows whose `openId` is `open_id`, counted outside the store.
    fn rows(&self, open_id: &str) -> i64;
}

pub fn full_profile() -> Profile {
    Profile {
        nick_name: Some("Ada".into()),
        avatar_url: Some("https://example.invalid/a.png".into()),
        gender: Some(2),
        city: Some("Shenzhen".into()),
        province: Some("Guangdong".into()),
        country: Some("China".into()),
        language: Some("zh_CN".into()),
    }
}

pub fn phone(pure: &str) -> PhoneNumber {
    PhoneNumber {
        phone_number: pure.into(),
        pure_phone_number: pure.into(),
        country_code: "86".into(),
    }
}

pub async fn upsert_inserts_then_merges_only_present_fields<D: Db>(db: D) {
    let store = db.store().await;
    assert_eq!(store.get("o-1").await.unwrap(), None);
    let first = store
        .upsert_login("o-1", None, Some(&full_profile()), None)
        .await
        .unwrap();
    assert_eq!(first.open_id, "o-1");
    assert_eq!(first.profile(), full_profile());
    assert!(first.created_at > 0 && first.last_login_at == Some(first.created_at));
    assert_eq!(store.get("o-1").await.unwrap(), Some(first.clone()));

    // A login without a profile keeps it; an empty profile is "nothing sent".
    let again = store.upsert_login("o-1", None, None, None).await.unwrap();
    assert_eq!(again.profile(), full_profile());
    let again = store
        .upsert_login("o-1", None, Some(&Profile::default()), None)
        .await
        .unwrap();
    assert_eq!(again.profile(), full_profile());
    // A partial one merges field by field.
    let partial = Profile {
        nick_name: Some("Grace".into()),
        gender: Some(1),
        ..Profile::default()
    };
    let merged = store
        .upsert_login("o-1", None, Some(&partial), None)
        .await
        .unwrap();
    assert_eq!(merged.nick_name.as_deref(), Some("Grace"));
    assert_eq!(merged.gender, Some(1));
    assert_eq!(merged.city.as_deref(), Some("Shenzhen"));
    assert_eq!(merged.created_at, first.created_at);
    assert_eq!(db.rows("o-1"), 1);
}

pub async fn updated_at_moves_only_when_data_changes<D: Db>(db: D) {
    let store = db.store().await;
    let first = store
        .upsert_login("o-t", Some("u-t"), Some(&full_profile()), None)
        .await
        .unwrap();
    // Times are seconds: wait for the next one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = store
        .upsert_login("o-t", Some("u-t"), Some(&full_profile()), None)
        .await
        .unwrap();
    assert_eq!(same.updated_at, first.updated_at, "nothing changed");
    assert!(
        same.last_login_at > first.last_login_at,
        "but it is a login"
    );
    let changed = store
        .update_profile(
            "o-t",
            &Profile {
                city: Some("Hangzhou".into()),
                ..Profile::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert!(changed.updated_at > first.updated_at);
    assert_eq!(
        changed.last_login_at, same.last_login_at,
        "a profile update is not a login"
    );
}

pub async fn union_ids_are_set_kept_and_found<D: Db>(db: D) {
    let store = db.store().await;
    let user = store.upsert_login("o-u1", None, None, None).await.unwrap();
    assert_eq!(user.union_id, None);
    let user = store
        .upsert_login("o-u1", Some("u-shared"), None, None)
        .await
        .unwrap();
    assert_eq!(user.union_id.as_deref(), Some("u-shared"));
    let user = store.upsert_login("o-u1", None, None, None).await.unwrap();
    assert_eq!(user.union_id.as_deref(), Some("u-shared"), "kept");
    assert_eq!(store.get_by_union_id("u-nobody").await.unwrap(), None);
    assert_eq!(
        store
            .get_by_union_id("u-shared")
            .await
            .unwrap()
            .unwrap()
            .open_id,
        "o-u1"
    );
    // Two rows share it: the most recent login wins.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store
        .upsert_login("o-u2", Some("u-shared"), None, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_by_union_id("u-shared")
            .await
            .unwrap()
            .unwrap()
            .open_id,
        "o-u2"
    );
}

pub async fn update_get_and_delete<D: Db>(db: D) {
    let store = db.store().await;
    assert_eq!(
        store
            .update_profile("o-ghost", &full_profile())
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.rows("o-ghost"), 0, "an update creates nobody");
    assert!(!store.delete("o-ghost").await.unwrap());
    store.upsert_login("o-d", None, None, None).await.unwrap();
    let updated = store
        .update_profile("o-d", &full_profile())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.profile(), full_profile());
    assert_eq!(store.get("o-d").await.unwrap(), Some(updated));
    assert!(store.delete("o-d").await.unwrap());
    assert!(!store.delete("o-d").await.unwrap());
    assert_eq!(store.get("o-d").await.unwrap(), None);
    assert_eq!(db.rows("o-d"), 0);
}

pub async fn phones_are_bound_replaced_and_kept<D: Db>(db: D) {
    let store = db.store().await;
    assert_eq!(
        store
            .set_phone("o-nobody", &phone("13800138000"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.rows("o-nobody"), 0);
    let user = store
        .upsert_login("o-p", None, None, Some(&phone("13800138000")))
        .await
        .unwrap();
    assert_eq!(user.phone(), Some(phone("13800138000")));
    let again = store.upsert_login("o-p", None, None, None).await.unwrap();
    assert_eq!(again.phone(), Some(phone("13800138000")));
    let foreign = PhoneNumber {
        phone_number: "+1 4155550100".into(),
        pure_phone_number: "4155550100".into(),
        country_code: "1".into(),
    };
    let replaced = store.set_phone("o-p", &foreign).await.unwrap().unwrap();
    assert_eq!(replaced.phone(), Some(foreign.clone()));
    assert_eq!(replaced.last_login_at, again.last_login_at, "not a login");
    assert_eq!(
        store.get("o-p").await.unwrap().unwrap().phone(),
        Some(foreign)
    );
}

/// 200 concurrent first logins of one user through two `MpAuth` instances (two pools):
/// one row.
pub async fn concurrent_first_logins_through_two_servers_make_one_row<D: Db>(db: D) {
    let sim = sim::simulator();
    let base = sim::serve(&sim).await;
    let servers: Vec<_> = [db.store().await, db.store().await]
        .into_iter()
        .map(|users| {
            Arc::new(MpAuth::new(
                config().with_wechat_base_url(&base),
                MemoryTokenStore::new(),
                users,
            ))
        })
        .collect();
    let codes: Vec<_> = (0..200).map(|_| sim.login("racer").unwrap().code).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(codes.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, code) in codes.into_iter().enumerate() {
        let (auth, barrier) = (Arc::clone(&servers[i % 2]), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            auth.authorize(&AuthorizeRequest::new(code)).await
        });
    }
    let mut ids = HashSet::new();
    for result in tasks.join_all().await {
        let authorized = result.expect("every login works");
        ids.insert(authorized.user.unwrap().open_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(db.rows(&sim.open_id("racer")), 1, "exactly one row");
}

/// Hostile ids and profile fields are stored exactly as given, or refused with
/// `InvalidInput` and nothing written; ids compare exactly (case, accents).
pub async fn hostile_values_are_stored_literally_or_refused_cleanly<D: Db>(db: D) {
    let store = db.store().await;
    let long = "長".repeat(10 * 1024 / 3);
    let values = [
        "o-'quote\"",
        "o-; DROP TABLE user; --",
        "o-' OR '1'='1",
        "o-emoji-😀𝄞",
        "o-back\\slash%_",
        "o-nul\0inside",
        long.as_str(),
    ];
    for value in values {
        let profile = Profile {
            nick_name: Some(value.to_owned()),
            city: Some(format!("{value}{value}")),
            ..Profile::default()
        };
        match store
            .upsert_login(value, Some(value), Some(&profile), None)
            .await
        {
            Ok(user) => {
                assert_eq!(user.open_id, value);
                assert_eq!(user.union_id.as_deref(), Some(value));
                assert_eq!(user.nick_name.as_deref(), Some(value));
                let read = store.get(value).await.unwrap().expect("stored");
                assert_eq!(read, user, "read back exactly");
                assert_eq!(db.rows(value), 1);
            }
            Err(UserStoreError::InvalidInput(reason)) => {
                assert!(!reason.contains(value) && !reason.is_empty());
                assert_eq!(db.rows(value), 0, "a refusal writes nothing");
                assert!(
                    value.contains('\0') || value.len() > 255,
                    "only NUL or an overlong id may be refused: {value:?} ({reason})"
                );
            }
            Err(other) => panic!("{value:?}: {other:?}"),
        }
    }
    // Exact matching: no case folding, no accent folding, no trailing-space padding.
    store
        .upsert_login("o-Case", None, None, None)
        .await
        .unwrap();
    for near in ["o-case", "o-CASE", "o-Casé", "o-Case "] {
        match store.get(near).await {
            Ok(found) => assert_eq!(found, None, "{near:?}"),
            // MySQL's collations ignore trailing spaces: such ids are refused.
            Err(UserStoreError::InvalidInput(_)) => assert!(near.ends_with(' ')),
            Err(other) => panic!("{near:?}: {other:?}"),
        }
    }
    store
        .upsert_login("o-case", None, None, None)
        .await
        .unwrap();
    assert_eq!(db.rows("o-Case"), 1);
    assert_eq!(db.rows("o-case"), 1);
    // The table survived every value above.
    assert!(store.get("o-Case").await.unwrap().is_some());
}

/// Several servers opening the same fresh database at once: each migrates or finds
/// the work done, none fails.
pub async fn concurrent_opens_all_succeed<D: Db>(db: D) {
    let db = Arc::new(db);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let db = Arc::clone(&db);
        tasks.spawn(async move { db.store().await });
    }
    let stores = tasks.join_all().await;
    stores[0]
        .upsert_login("o-open", None, None, None)
        .await
        .unwrap();
    for store in &stores {
        assert!(store.get("o-open").await.unwrap().is_some());
    }
}

macro_rules! user_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            user_suite!(@cases $make;
                upsert_inserts_then_merges_only_present_fields,
                updated_at_moves_only_when_data_changes,
                union_ids_are_set_kept_and_found,
                update_get_and_delete,
                phones_are_bound_replaced_and_kept,
                concurrent_first_logins_through_two_servers_make_one_row,
                hostile_values_are_stored_literally_or_refused_cleanly,
                concurrent_opens_all_succeed,
            );
        }
    };
    (@cases $make:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::suite::$case($make).await;
            }
        )*
    };
}
