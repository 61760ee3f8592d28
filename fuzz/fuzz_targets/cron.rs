//! Cron expressions, time zones and time triggers: parse, then ask the scheduler for due and next
//! ticks around arbitrary times. Errors, never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aiflow_fuzz::check_trigger(data);
});
