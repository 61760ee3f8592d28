//! Event key patterns and filters: `key_matches` agrees with a plain backtracking matcher, and
//! query strings and event bodies give errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aiflow_fuzz::check_event_filter(data);
});
