//! The one integration-test binary: each module drives edgellm through its public surface.

mod engine;
mod plan;
mod run_cli;
mod serve;
mod server;
mod support;
