//! NetworkFault specs as the API server would hand them over (JSON): deserialised, then the
//! daemon's checks (the ones the CRD schema makes and the ones it cannot). Errors are fine; a
//! panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = serde_json::from_slice::<injector::k8s::resource::NetworkFaultSpec>(data) {
        let _ = spec.validate();
        let _ = spec.action_spec().action_text();
    }
});
