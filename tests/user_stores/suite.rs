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
    /// The rows whose `openId` is `open_id`, in every app, counted outside the store.
    fn rows(&self, open_id: &str) -> i64;
    /// The rows of (`app_id`, `open_id`), counted outside the store.
    fn rows_in(&self, app_id: &str, open_id: &str) -> i64;
}

/// The app of the single-app cases.
pub const APP: &str = "wx-app-a";
/// Another app of the same backend (and Open Platform account).
pub const OTHER_APP: &str = "wx-app-b";
/// A third one.
pub const THIRD_APP: &str = "wx-app-c";

/// A person id as every store makes them: 32 lowercase hex characters.
pub fn assert_person_id(id: &str) {
    assert!(
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "not a person id: {id:?}"
    );
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
    assert_eq!(store.get(APP, "o-1").await.unwrap(), None);
    let first = store
        .upsert_login(APP, "o-1", None, Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(first.open_id, "o-1");
    assert_eq!(first.profile(), full_profile());
    assert!(first.created_at > 0 && first.last_login_at == Some(first.created_at));
    assert_eq!(store.get(APP, "o-1").await.unwrap(), Some(first.clone()));

    // A login without a profile keeps it; an empty profile is "nothing sent".
    let again = store
        .upsert_login(APP, "o-1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(again.profile(), full_profile());
    let again = store
        .upsert_login(APP, "o-1", None, Some(&Profile::default()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(again.profile(), full_profile());
    // A partial one merges field by field.
    let partial = Profile {
        nick_name: Some("Grace".into()),
        gender: Some(1),
        ..Profile::default()
    };
    let merged = store
        .upsert_login(APP, "o-1", None, Some(&partial), None)
        .await
        .unwrap()
        .user;
    assert_eq!(merged.nick_name.as_deref(), Some("Grace"));
    assert_eq!(merged.gender, Some(1));
    assert_eq!(merged.city.as_deref(), Some("Shenzhen"));
    assert_eq!(merged.created_at, first.created_at);
    assert_eq!(db.rows("o-1"), 1);
}

pub async fn updated_at_moves_only_when_data_changes<D: Db>(db: D) {
    let store = db.store().await;
    let first = store
        .upsert_login(APP, "o-t", Some("u-t"), Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    // Times are seconds: wait for the next one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let same = store
        .upsert_login(APP, "o-t", Some("u-t"), Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    assert_eq!(same.updated_at, first.updated_at, "nothing changed");
    assert!(
        same.last_login_at > first.last_login_at,
        "but it is a login"
    );
    let changed = store
        .update_profile(
            APP,
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
    let user = store
        .upsert_login(APP, "o-u1", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id, None);
    let user = store
        .upsert_login(APP, "o-u1", Some("u-shared"), None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(user.union_id.as_deref(), Some("u-shared"));
    let user = store
        .upsert_login(APP, "o-u1", None, None, None)
        .await
        .unwrap()
        .user;
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
        .upsert_login(APP, "o-u2", Some("u-shared"), None, None)
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
            .update_profile(APP, "o-ghost", &full_profile())
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.rows("o-ghost"), 0, "an update creates nobody");
    assert!(!store.delete(APP, "o-ghost").await.unwrap());
    store
        .upsert_login(APP, "o-d", None, None, None)
        .await
        .unwrap();
    let updated = store
        .update_profile(APP, "o-d", &full_profile())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.profile(), full_profile());
    assert_eq!(store.get(APP, "o-d").await.unwrap(), Some(updated));
    assert!(store.delete(APP, "o-d").await.unwrap());
    assert!(!store.delete(APP, "o-d").await.unwrap());
    assert_eq!(store.get(APP, "o-d").await.unwrap(), None);
    assert_eq!(db.rows("o-d"), 0);
}

pub async fn phones_are_bound_replaced_and_kept<D: Db>(db: D) {
    let store = db.store().await;
    assert_eq!(
        store
            .set_phone(APP, "o-nobody", &phone("13800138000"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.rows("o-nobody"), 0);
    let user = store
        .upsert_login(APP, "o-p", None, None, Some(&phone("13800138000")))
        .await
        .unwrap()
        .user;
    assert_eq!(user.phone(), Some(phone("13800138000")));
    let again = store
        .upsert_login(APP, "o-p", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(again.phone(), Some(phone("13800138000")));
    let foreign = PhoneNumber {
        phone_number: "+1 4155550100".into(),
        pure_phone_number: "4155550100".into(),
        country_code: "1".into(),
    };
    let replaced = store
        .set_phone(APP, "o-p", &foreign)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replaced.phone(), Some(foreign.clone()));
    assert_eq!(replaced.last_login_at, again.last_login_at, "not a login");
    assert_eq!(
        store.get(APP, "o-p").await.unwrap().unwrap().phone(),
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
            .upsert_login(APP, value, Some(value), Some(&profile), None)
            .await
        {
            Ok(stored) => {
                let user = stored.user;
                assert_eq!(user.open_id, value);
                assert_eq!(user.union_id.as_deref(), Some(value));
                assert_eq!(user.nick_name.as_deref(), Some(value));
                let read = store.get(APP, value).await.unwrap().expect("stored");
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
        .upsert_login(APP, "o-Case", None, None, None)
        .await
        .unwrap();
    for near in ["o-case", "o-CASE", "o-Casé", "o-Case "] {
        match store.get(APP, near).await {
            Ok(found) => assert_eq!(found, None, "{near:?}"),
            // MySQL's collations ignore trailing spaces: such ids are refused.
            Err(UserStoreError::InvalidInput(_)) => assert!(near.ends_with(' ')),
            Err(other) => panic!("{near:?}: {other:?}"),
        }
    }
    store
        .upsert_login(APP, "o-case", None, None, None)
        .await
        .unwrap();
    assert_eq!(db.rows("o-Case"), 1);
    assert_eq!(db.rows("o-case"), 1);
    // The table survived every value above.
    assert!(store.get(APP, "o-Case").await.unwrap().is_some());

    // App ids too: stored exactly, or (MySQL's 64-character column) refused.
    let long_app = "w".repeat(65);
    for app in ["wx-'quote\"", "wx-😀", "wx-Case", long_app.as_str()] {
        match store.upsert_login(app, "o-in-app", None, None, None).await {
            Ok(stored) => {
                assert_eq!(stored.user.app_id, app);
                assert_eq!(store.get(app, "o-in-app").await.unwrap(), Some(stored.user));
                assert_eq!(db.rows_in(app, "o-in-app"), 1);
            }
            Err(UserStoreError::InvalidInput(reason)) => {
                assert!(app.len() > 64, "{app:?} refused: {reason}");
                assert_eq!(db.rows_in(app, "o-in-app"), 0);
            }
            Err(other) => panic!("{app:?}: {other:?}"),
        }
    }
    assert_eq!(store.get("wx-case", "o-in-app").await.unwrap(), None);
}

/// One unionid in two apps: one person, whose records `person` lists by app.
pub async fn two_apps_one_union_id_are_one_person<D: Db>(db: D) {
    let store = db.store().await;
    // The later app's record first, so that the order is the store's, not the logins'.
    let b = store
        .upsert_login(OTHER_APP, "o-b", Some("u-one"), None, None)
        .await
        .unwrap();
    assert_eq!(b.merged_from, None);
    assert_person_id(&b.user.person_id);
    let a = store
        .upsert_login(APP, "o-a", Some("u-one"), Some(&full_profile()), None)
        .await
        .unwrap();
    assert_eq!(a.merged_from, None, "a new record moved from nobody");
    assert_eq!(a.user.person_id, b.user.person_id);
    assert_eq!(a.user.app_id, APP);
    let person = store.person(&a.user.person_id).await.unwrap();
    assert_eq!(person, vec![a.user.clone(), b.user.clone()]);
    // Another login of either changes nobody's person.
    let again = store
        .upsert_login(OTHER_APP, "o-b", Some("u-one"), None, None)
        .await
        .unwrap();
    assert_eq!(
        (again.user.person_id.as_str(), again.merged_from),
        (b.user.person_id.as_str(), None)
    );
    assert_eq!(
        store
            .person("0123456789abcdef0123456789abcdef")
            .await
            .unwrap(),
        vec![]
    );
    // A user of its own is a person of its own.
    let alone = store
        .upsert_login(APP, "o-alone", None, None, None)
        .await
        .unwrap()
        .user;
    assert_person_id(&alone.person_id);
    assert_ne!(alone.person_id, a.user.person_id);
    assert_eq!(store.person(&alone.person_id).await.unwrap(), vec![alone]);
}

/// The same openid string in two apps is two users, each with its own data.
pub async fn one_open_id_in_two_apps_is_two_users<D: Db>(db: D) {
    let store = db.store().await;
    let grace = Profile {
        nick_name: Some("Grace".into()),
        ..Profile::default()
    };
    let a = store
        .upsert_login(APP, "o-same", None, Some(&full_profile()), None)
        .await
        .unwrap()
        .user;
    let b = store
        .upsert_login(
            OTHER_APP,
            "o-same",
            None,
            Some(&grace),
            Some(&phone("13800138000")),
        )
        .await
        .unwrap()
        .user;
    assert_ne!(a.person_id, b.person_id);
    assert_eq!((a.app_id.as_str(), b.app_id.as_str()), (APP, OTHER_APP));
    assert_eq!(db.rows("o-same"), 2);
    assert_eq!(
        (db.rows_in(APP, "o-same"), db.rows_in(OTHER_APP, "o-same")),
        (1, 1)
    );
    let read_a = store.get(APP, "o-same").await.unwrap().unwrap();
    assert_eq!(read_a.profile(), full_profile());
    assert_eq!(read_a.phone(), None);
    let read_b = store.get(OTHER_APP, "o-same").await.unwrap().unwrap();
    assert_eq!(read_b.nick_name.as_deref(), Some("Grace"));
    assert_eq!(read_b.phone(), Some(phone("13800138000")));
    // Writes go to one app's record only.
    store
        .update_profile(
            APP,
            "o-same",
            &Profile {
                city: Some("Xi'an".into()),
                ..Profile::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.get(OTHER_APP, "o-same").await.unwrap().unwrap(),
        read_b
    );
}

/// A unionid that comes late: the record joins the person of the other app's record
/// that has it, keeping its own data, and says which person it left.
pub async fn a_late_union_id_joins_the_person_that_has_it<D: Db>(db: D) {
    let store = db.store().await;
    let a = store
        .upsert_login(
            APP,
            "o-late",
            None,
            Some(&full_profile()),
            Some(&phone("13800138000")),
        )
        .await
        .unwrap()
        .user;
    let b = store
        .upsert_login(OTHER_APP, "o-early", Some("u-late"), None, None)
        .await
        .unwrap()
        .user;
    assert_ne!(a.person_id, b.person_id);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let joined = store
        .upsert_login(APP, "o-late", Some("u-late"), None, None)
        .await
        .unwrap();
    assert_eq!(joined.merged_from.as_deref(), Some(a.person_id.as_str()));
    assert_eq!(joined.user.person_id, b.person_id);
    assert_eq!(joined.user.union_id.as_deref(), Some("u-late"));
    assert_eq!(joined.user.profile(), full_profile(), "A's profile is kept");
    assert_eq!(
        joined.user.phone(),
        Some(phone("13800138000")),
        "and its phone"
    );
    assert_eq!(joined.user.created_at, a.created_at);
    assert!(
        joined.user.updated_at > a.updated_at,
        "the move is a change"
    );
    assert_eq!(
        store.person(&b.person_id).await.unwrap(),
        vec![joined.user.clone(), b.clone()]
    );
    assert_eq!(
        store.person(&a.person_id).await.unwrap(),
        vec![],
        "nobody is left"
    );
    assert_eq!(
        store.get(APP, "o-late").await.unwrap(),
        Some(joined.user.clone())
    );
    // Once moved, it stays.
    let again = store
        .upsert_login(APP, "o-late", Some("u-late"), None, None)
        .await
        .unwrap();
    assert_eq!(again.merged_from, None);
    assert_eq!(again.user.person_id, b.person_id);
    assert_eq!(
        again.user.updated_at, joined.user.updated_at,
        "nothing changed"
    );
}

/// Concurrent first logins of one unionid in three apps, through two stores (two
/// pools), round after round: one person each time.
pub async fn concurrent_first_logins_of_one_union_id_make_one_person<D: Db>(db: D) {
    let stores = [db.store().await, db.store().await];
    for round in 0..15 {
        let union_id = format!("u-race-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(3));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, app) in [APP, OTHER_APP, THIRD_APP].into_iter().enumerate() {
            let (store, barrier, union_id) = (
                stores[i % 2].clone(),
                Arc::clone(&barrier),
                union_id.clone(),
            );
            tasks.spawn(async move {
                barrier.wait().await;
                store
                    .upsert_login(
                        app,
                        &format!("o-race-{round}-{i}"),
                        Some(&union_id),
                        None,
                        None,
                    )
                    .await
            });
        }
        let logins: Vec<_> = tasks
            .join_all()
            .await
            .into_iter()
            .map(|login| login.expect("every login works"))
            .collect();
        let persons: HashSet<_> = logins.iter().map(|l| l.user.person_id.clone()).collect();
        assert_eq!(persons.len(), 1, "round {round}: {persons:?}");
        assert!(
            logins.iter().all(|l| l.merged_from.is_none()),
            "round {round}"
        );
        let person = persons.into_iter().next().unwrap();
        let records = stores[0].person(&person).await.unwrap();
        let apps: Vec<_> = records.iter().map(|u| u.app_id.as_str()).collect();
        assert_eq!(apps, [APP, OTHER_APP, THIRD_APP], "round {round}");
    }
}

/// Deleting a record in one app leaves the person's record in the other.
pub async fn delete_in_one_app_leaves_the_other<D: Db>(db: D) {
    let store = db.store().await;
    let a = store
        .upsert_login(APP, "o-del-a", Some("u-del"), None, None)
        .await
        .unwrap()
        .user;
    let b = store
        .upsert_login(OTHER_APP, "o-del-b", Some("u-del"), None, None)
        .await
        .unwrap()
        .user;
    assert!(
        !store.delete(OTHER_APP, "o-del-a").await.unwrap(),
        "not B's key"
    );
    assert!(store.delete(APP, "o-del-a").await.unwrap());
    assert_eq!(store.get(APP, "o-del-a").await.unwrap(), None);
    assert_eq!(
        store.get(OTHER_APP, "o-del-b").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.person(&a.person_id).await.unwrap(), vec![b.clone()]);
    assert_eq!(store.get_by_union_id("u-del").await.unwrap(), Some(b));
    assert_eq!(db.rows("o-del-a"), 0);
}

/// Another app's (app, openid) finds nothing and writes nothing.
pub async fn another_apps_key_finds_nothing<D: Db>(db: D) {
    let store = db.store().await;
    let a = store
        .upsert_login(APP, "o-mine", None, None, None)
        .await
        .unwrap()
        .user;
    assert_eq!(store.get(OTHER_APP, "o-mine").await.unwrap(), None);
    assert_eq!(
        store
            .update_profile(OTHER_APP, "o-mine", &full_profile())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .set_phone(OTHER_APP, "o-mine", &phone("13800138000"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.rows("o-mine"), 1);
    assert_eq!(store.get(APP, "o-mine").await.unwrap(), Some(a));
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
        .upsert_login(APP, "o-open", None, None, None)
        .await
        .unwrap();
    for store in &stores {
        assert!(store.get(APP, "o-open").await.unwrap().is_some());
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
                two_apps_one_union_id_are_one_person,
                one_open_id_in_two_apps_is_two_users,
                a_late_union_id_joins_the_person_that_has_it,
                concurrent_first_logins_of_one_union_id_make_one_person,
                delete_in_one_app_leaves_the_other,
                another_apps_key_finds_nothing,
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
