//! The parts one at a time: the token stores (the shared store suite, Redis's key
//! layout, the validation cache), `MpAuthLayer` as a tower layer and in an axum router,
//! the sqlite user store, the WeChat client and open-data crypto, token parsing
//! (property tests) and the fuzz targets' committed inputs.
//!
//! One binary: the suites share one `redis-server` (each test under a key prefix of its
//! own); the tests that count a server's commands, stop or freeze it use servers of their
//! own.

#[path = "../common/mod.rs"]
mod common;
#[macro_use]
#[path = "../store_suite/mod.rs"]
mod store_suite;

mod axum_router;
mod cache;
mod fuzz_seeds;
mod layer;
mod store;
mod token_props;
mod users_sqlite;
mod wechat_client;
mod wechat_crypto;
