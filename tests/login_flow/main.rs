//! `MpAuth` whole: logins, refreshes and logouts through the library calls and the HTTP
//! handlers, login throttling, and races on one user's tokens, each against a fake
//! WeChat, a real sqlite file and both token stores.
//!
//! One binary: the suites share one `redis-server` (each test under a key prefix of its
//! own); the tests that stop Redis stop a server of their own.

#[path = "../common/mod.rs"]
mod common;

mod access_token;
mod apps;
mod devices;
mod handlers;
mod login;
mod metrics;
mod phone;
mod races;
mod retry;
mod throttle;
