//! Directory files (`runtime::Directory::parse`): any text is refused with a message or
//! accepted; an accepted directory parses again to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pactum_runtime::Directory;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    match Directory::parse(text, "fuzz input") {
        Ok(directory) => {
            let again = Directory::parse(text, "fuzz input");
            assert_eq!(again.as_ref(), Ok(&directory), "parsing is not deterministic");
            for provider in directory.providers() {
                assert_eq!(directory.providers().iter().filter(|p| p.id == provider.id).count(), 1);
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
