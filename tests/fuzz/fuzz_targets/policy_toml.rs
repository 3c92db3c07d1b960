//! Policy files (`runtime::policy::Policy::parse_toml`, which compiles every rule expression):
//! any text is refused with a message or accepted; an accepted policy's canonical JSON (what a
//! session records) compiles again to the same policy, hash included.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pactum_runtime::policy::{Policy, PolicyLayer};

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    // The layer form (what `extends` reads) goes through the same parser without resolving.
    let _ = PolicyLayer::parse_toml(text, "fuzz input");
    match Policy::parse_toml(text, "fuzz input") {
        Ok(policy) => {
            let json = policy.to_json();
            let again = match Policy::from_json(&json) {
                Ok(again) => again,
                Err(error) => panic!("an accepted policy's recorded JSON is refused: {error}\n{json}"),
            };
            assert_eq!(again.policy_hash(), policy.policy_hash(), "the recorded JSON compiles to another policy");
            assert_eq!(again.to_json(), json);
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
