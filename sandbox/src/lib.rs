//! `clairo-sandbox`: a faithful local stand-in for the Clairo REST API.
//!
//! It serves the documented `/api/v1` (agents, chat, discover, conversations, briefs,
//! meetings) with the documented shapes, `{"error": "…"}` bodies, status codes and
//! `X-RateLimit-*` headers; adds fault knobs (injected errors, latency, malformed list
//! items, `Retry-After`); and exposes an admin surface under `/_sandbox` for driving a
//! sandbox in another process. It is used by the daemon's integration tests, by
//! `clairo-sync sandbox` / `demo`, and by the benchmarks.
//!
//! It deliberately shares no types with the daemon's Clairo client: a misreading of the
//! docs baked into a shared type would pass every test. Where the docs are silent (list
//! item fields, discovery questions, ids) the choices are documented where they are made.

#![forbid(unsafe_code)]

mod admin;
mod api;
mod clock;
mod config;
mod content;
mod gate;
mod ids;
mod meetings;
mod ratelimit;
mod reply;
mod server;
mod stats;
mod store;

pub use config::{Faults, SandboxConfig};
pub use server::{Sandbox, start};
pub use stats::{RequestRecord, Stats, UploadRecord};
pub use store::{AgentInfo, BriefSpec};
