//! Fault files and API bodies: any bytes through `parse_list` (JSON: a list, `{"faults": ...}`
//! or one fault), then each fault's validation and its table text. Errors are fine; a panic is
//! a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(specs) = injector::fault::spec::parse_list(text) else {
        return;
    };
    for (i, s) in specs.iter().enumerate() {
        let _ = s.action_text();
        let _ = s.outcomes();
        if let Ok(f) = s.validate(&format!("faults[{i}].")) {
            // What validated compiles into a kernel image (or says why not).
            let names = [f.name.as_str()];
            if let Ok(slots) = injector::fault::compile::assign_slots(&Default::default(), &names) {
                let faults = [f.clone()];
                let _ = injector::fault::compile::compile(&injector::fault::compile::plan_at(
                    &faults, &slots, 1,
                ));
            }
        }
    }
});
