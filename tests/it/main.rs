//! The integration tests: one binary, one module per area. Every test uses real files,
//! real HTTP on 127.0.0.1 port 0, and the sandbox for the Clairo API.

mod chat;
mod client;
mod config;
mod crm_check;
mod dashboard;
mod engine;
mod failover;
mod faults;
mod health;
mod hostile;
mod meetings;
mod ops;
mod pg;
mod pg_down;
mod routing;
mod state;
#[macro_use]
mod store;
mod store_items;
mod support;
mod webhook;
