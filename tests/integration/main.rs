//! Integration tests against real components: Mosquitto, the daemon binary, an HTTP webhook
//! receiver and a redb file.

mod accounting;
mod api;
mod backlog;
mod bad_input;
mod broker_restart;
mod check;
mod console;
mod crash;
mod detectors;
mod devices;
mod graceful;
mod mining;
mod plugins;
mod reload;
mod restart;
mod service;
mod storage;
mod support;
mod tls;
mod webhook_faults;
