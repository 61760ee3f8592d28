//! AI Flow scheduler: rule engine, execution state machines, triggers and executors.
//!
//! The core is pure: [`state`] holds the state machines with their allowed transitions,
//! [`rules`] evaluates job rules against signals and decides what a fired action does. The I/O
//! around it (consuming the bus, persisting state with the offset, running processes) builds on
//! these functions.

pub mod executor;
pub mod rules;
pub mod state;

pub use executor::{LaunchSpec, LocalExecutor, Outcome, RunningJob};
pub use rules::{
    Decision, Evaluation, RuleMemory, Signal, decide, evaluate, initial_jobs, outcome,
};
pub use state::{JobState, WorkflowState};
