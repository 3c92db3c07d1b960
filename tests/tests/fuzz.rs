//! Every fuzz target in tests/fuzz runs for a bounded time: `tests/fuzz/run` installs the pinned
//! cargo-fuzz into the target directory if it is missing, builds the targets with coverage
//! instrumentation on the stable toolchain, and runs each over a scratch copy of its committed
//! corpus (`PACTUM_FUZZ_SECONDS` each, 20 by default, two at a time). A crash, a timeout or an
//! out-of-memory fails this test with the target and the input named in the output above the
//! failure. A machine that cannot build the targets fails it too: it is never skipped.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn every_fuzz_target_runs_clean_for_a_bounded_time() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests").join("fuzz").join("run");
    let status = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .status()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
    assert!(
        status.success(),
        "{} failed ({status}): a fuzz target found a crash, timeout or out-of-memory, or the targets could not be \
         built; the lines above name the target and the input",
        script.display()
    );
}
