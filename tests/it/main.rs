//! The end-to-end tests of the `aiflow` binary, in one test binary so the suite links once:
//! each module starts real `aiflow server` (and worker) processes; `common` holds what they
//! share. Run one module with `cargo test --test it <module>::`.

mod artifacts;
mod cli_conventions;
mod common;
mod containers;
mod distributed;
mod exit_codes;
mod faults;
mod federated;
mod fencing;
mod inputs;
mod limits;
mod load;
mod mlflow;
mod mounts;
mod observability;
mod openlineage;
mod outlive;
mod security;
mod server;
mod tls;
