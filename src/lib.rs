//! clairo-sync: a daemon that keeps a business's tools in step with its Clairo account.
#![forbid(unsafe_code)]

pub mod metrics;
