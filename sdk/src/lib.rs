//! AI Flow SDK.
