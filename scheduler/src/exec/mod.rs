//! Executors beside the local process executor: containers on a Docker Engine API, and the GPU
//! assignment both kinds use.

pub mod container;
pub mod gpus;
