//! Experiment files (YAML or JSON): any text through `experiment::file::load`, which validates
//! every step, ramp, probe and rule. Errors are fine; a panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = injector::experiment::file::load("fuzz.yaml", text);
    }
});
