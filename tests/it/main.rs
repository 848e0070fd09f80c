//! The one integration-test binary: each module drives edgellm through its public surface.

// Test code (helpers included) may unwrap and expect; the library may not (Cargo.toml [lints]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod bench;
mod calibrate;
mod constrained;
mod delivery;
mod egress;
mod embeddings;
mod engine;
mod mosquitto;
mod packs;
mod plan;
mod route;
mod run_cli;
mod serve;
mod server;
mod support;
mod tasks;
mod telemetry;
mod tools;
mod upstream_stub;
mod vault;
