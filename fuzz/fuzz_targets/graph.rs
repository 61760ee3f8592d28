//! AI graph and workflow documents: parse, check, translate, render; then the workflow a graph
//! becomes must read back as a valid workflow, and the rule engine must accept it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    aiflow_fuzz::check_document(text);
});
