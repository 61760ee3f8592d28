//! AI Flow notification service: durable events and replay-then-live listening.
