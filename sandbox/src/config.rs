//! Knobs for one sandbox run: who may call it, how fast, what data it starts with, and
//! which faults it injects.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a sandbox starts. Everything can be changed later through [`crate::Sandbox`] or the
/// `/_sandbox` admin routes except the seeded data and `conversation_list_fields`.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Requests per window per API key (one key = one business, as the docs count it).
    pub rate_limit: u32,
    /// The fixed window's length. The docs say "per minute", but clients must not rely on
    /// it, and tests want windows of a few seconds.
    pub window: Duration,
    /// Keys accepted as belonging to a Max-plan account.
    pub api_keys: Vec<String>,
    /// Keys that are known but whose account lacks the Max plan: answered 403.
    pub no_plan_keys: Vec<String>,
    /// Seed for every id and every invented name, answer and fault decision.
    pub seed: u64,
    /// Briefs created at start, each with its Discovery conversation.
    pub seed_briefs: usize,
    /// Support conversations created at start, a mix of ACTIVE and CLOSED.
    pub seed_conversations: usize,
    /// Whether conversation list items carry `updatedAt` and `messageCount`. The docs do
    /// not show list items at all, so clients must cope with either.
    pub conversation_list_fields: bool,
    pub faults: Faults,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            rate_limit: 1000,
            window: Duration::from_secs(60),
            api_keys: vec!["clr_sandbox_key".to_owned()],
            no_plan_keys: vec!["clr_sandbox_noplan".to_owned()],
            seed: 42,
            seed_briefs: 3,
            seed_conversations: 3,
            conversation_list_fields: true,
            faults: Faults::default(),
        }
    }
}

/// Faults injected into authenticated API traffic. `#[serde(default)]` lets
/// `PUT /_sandbox/faults` send only the knobs it cares about.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction of authenticated, admitted requests answered 500 `{"error":"Internal server error"}`.
    pub error_rate: f64,
    /// Added before every request that reaches a handler.
    pub latency_ms: u64,
    /// This many malformed items appended to every list (agents, conversations, briefs).
    pub malformed_items: usize,
    /// Whether 429s carry `Retry-After` (seconds). The docs don't promise it.
    pub retry_after: bool,
    /// Whether `GET /briefs` honours `?limit=` (newest first) like `/conversations`. The
    /// docs give `/briefs` no parameters, so by default it lists every brief; benchmarks
    /// turn this on to measure a large history behind a list of the usual size.
    pub briefs_honour_limit: bool,
}
