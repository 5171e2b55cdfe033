//! Shared integration-test harness.
//!
//! Each integration test file does `mod common;` (the module must be named
//! `common`: the `assert_eventually!` macro refers to `$crate::common`).
//!
//! * [`Mosquitto`] / [`MosquittoConfig`]: a real `mosquitto` broker per test, on
//!   a free loopback port, with its config, log and persistence in a temp dir;
//!   stop / kill -9 / restart on the same port / pause / resume.
//! * [`poll_until`], [`poll_until_async`], [`eventually`], [`eventually_async`]
//!   and [`assert_eventually!`](crate::assert_eventually): waiting on a
//!   condition with a deadline (never a fixed sleep).
//! * [`TestPki`], [`tls_listener`]: test certificates made with rcgen (CA, server,
//!   client, self-signed, expired) and the mosquitto lines of a TLS listener.
//! * [`Sub`] / [`SubOptions`], [`publish`], [`publish_many`]: independent MQTT
//!   clients (`mosquitto_sub` / `mosquitto_pub`) to observe or drive the crate.
//!
//! Inside `#[tokio::test]` (a current-thread runtime) prefer the `*_async`
//! waiters: the blocking ones stall the runtime, so the code under test cannot
//! make progress while they wait.
//!
//! * [`HttpEndpoint`], [`http_get`], [`Exposition`], [`promtool_check_metrics`]: the
//!   crate's HTTP endpoints on an OS-chosen port, a raw HTTP/1.1 GET, a parser for the
//!   Prometheus text format and `promtool check metrics`.
//!
//! * [`open_fds`], [`rss_kib`]: a child process's file descriptors and memory, from
//!   `/proc`; [`SteadyPublisher`]: a paced publisher that rides out broker restarts.
//!
//! * [`DaemonProcess`]: the `mqtt-sessions` binary on a config in a temp dir.
//! * [`Browser`]: headless Chromium over W3C WebDriver (`chromedriver`).
//!
//! The binaries come from Debian's `mosquitto` and `mosquitto-clients`
//! packages; `scripts/test` installs them.
#![allow(dead_code)]
#![allow(unreachable_pub, unused_imports)]
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod certs;
mod child;
mod clients;
mod http;
mod mosquitto;
mod poll;

#[allow(unused_imports, reason = "used by the TLS tests only")]
pub use certs::*;
pub use child::*;
pub use clients::*;
#[allow(unused_imports, reason = "only the metrics tests speak HTTP")]
pub use http::*;
pub use mosquitto::*;
pub use poll::*;
mod events;
mod feeder;
pub use feeder::*;
mod figures;
mod fuzz;
#[allow(unused_imports, reason = "used by the HTTP tests only")]
pub use daemon::*;
pub use events::*;
pub use figures::*;
pub use fuzz::*;
mod paced;
pub use paced::*;
mod procfs;
pub use procfs::*;
mod steady;
pub use steady::*;
mod proxy;
pub use proxy::*;
mod netstat;
#[allow(unused_imports, reason = "used by the option tests only")]
pub use netstat::*;
#[allow(unused_imports, reason = "used by the status page test only")]
pub use webdriver::*;
mod daemon;
mod webdriver;
