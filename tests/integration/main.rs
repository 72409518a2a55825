//! Integration tests against real components: Mosquitto, the daemon binary, an HTTP webhook
//! receiver and a redb file.

mod bad_input;
mod check;
mod mining;
mod reload;
mod restart;
mod support;
mod webhook_faults;
