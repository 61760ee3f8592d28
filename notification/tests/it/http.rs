//! HTTP tests (todo)
