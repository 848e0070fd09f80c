//! The egress guard's decisions, as plain functions and types (no IO): what may leave the device
//! ([`network`] gates and opt-in), how much it may cost ([`budget`]). The IO they need (sysfs,
//! the ledger) is done by the caller (`netstate`, `ledger`, the router).

pub mod budget;
pub mod network;
pub mod redact;
