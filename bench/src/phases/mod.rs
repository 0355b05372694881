//! One file per phase of the suite, each an `impl Bench` block; the knobs they share
//! (budgets, sizes, schedules) are the constants at the top of main.rs.

use super::*;

mod drain;
mod failover;
mod history;
mod idle;
mod routing;
mod throughput;
mod upload;
