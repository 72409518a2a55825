//! gridwatch finds crypto-mining farms, tampered meters and abnormal loads in smart-meter
//! telemetry as it arrives.
//!
//! The modules follow the pipeline:
//!
//! | module | role |
//! |---|---|
//! | [`ingest`] | MQTT subscription, reconnects, manual acknowledgements |
//! | [`decode`] | payload and topic validation into [`decode::Reading`] |
//! | [`state`] | per-meter register tracking and rolling statistics |
//! | [`plugins`] | WebAssembly detector plugins, sandboxed and hot-swapped |
//! | [`rules`] | Rhai rules per region, sandboxed and hot-reloaded |
//! | [`alerts`] | alert records, deduplication and escalation |
//! | [`store`] | the redb database: state, alerts, outbox, rejected messages |
//! | [`delivery`] | signed webhook delivery with retries and dead letters |
//! | [`api`] | HTTP health, metrics and alert endpoints |
//! | [`pipeline`] | the batch loop tying decode, state, plugins, rules and store together |
//! | [`watch`] | reload on change for the rules and plugins folders |
//! | [`publish`] | replays real data sets as MQTT telemetry |
//! | [`app`] | start-up wiring of the daemon |
//! | `demo` | embedded broker, daemon, publisher and receiver in one command |

pub mod alerts;
pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod decode;
pub mod delivery;
#[cfg(feature = "embedded-broker")]
pub mod demo;
pub mod eval;
pub mod ingest;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod publish;
pub mod rules;
pub mod service;
pub mod state;
pub mod store;
pub mod watch;
