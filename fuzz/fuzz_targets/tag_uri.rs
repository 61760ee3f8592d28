//! Tag URIs (`name?k=v&k2=v2`): errors, never panics; what parses formats and parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aiflow_fuzz::check_tag_uri(data);
});
