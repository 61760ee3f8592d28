//! AI Flow scheduler: rule engine, execution state machines, triggers and executors.
