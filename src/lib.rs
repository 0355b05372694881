//! clairo-sync: a daemon that keeps a business's tools in step with its Clairo account.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clairo;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod test_event;
