//! Memory export files (`memory::Constellation::import_block`, what `pactum memory import`
//! calls): any bytes are refused with a message or imported; an imported block exports to a
//! file that imports again adding nothing, and that another constellation imports to the same
//! export. Each input starts from a copy of one small constellation (agents `alice` and `bob`),
//! so a finding replays from its input alone.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pactum_memory::blocks::Author;
use pactum_memory::{AgentRecord, AgentRole, Constellation, SecretSeed};

struct Template {
    directory: tempfile::TempDir,
    path: PathBuf,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let db = Constellation::open(directory.path().join("setup.db")).expect("a constellation");
        for (n, id) in [(1_u8, "alice"), (2, "bob")] {
            db.ensure_agent(AgentRecord {
                agent_id: id.to_owned(),
                display_name: id.to_owned(),
                role: AgentRole::Buyer,
                key_id: format!("agent:{id}#1"),
                public_key: [n; 32],
                secret_key: SecretSeed::new([n; 32]),
                created_at_ms: 1,
            })
            .expect("an agent");
        }
        let path = directory.path().join("template.db");
        db.backup(&path).expect("a copy of the constellation");
        Template { directory, path }
    })
}

/// A fresh copy of the template constellation named `name`.
fn fresh(name: &str) -> Constellation {
    let template = template();
    let path = template.directory.path().join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::copy(&template.path, &path).expect("copying the template");
    Constellation::open(&path).expect("the copy opens")
}

fuzz_target!(|bytes: &[u8]| {
    let db = fresh("work.db");
    let report = match db.import_block(bytes, None, None, &Author::Partner, 1_000) {
        Ok(report) => report,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let (owner, label) = (report.block.owner.clone(), report.block.label.clone());
    let exported = db.export_block(&owner, &label, &Author::Partner).expect("an imported block exports");
    let again = db.import_block(&exported, None, None, &Author::Partner, 2_000).expect("its export imports again");
    assert_eq!((again.created, again.added), (false, 0), "importing a block's own export changed it");
    db.verify_block(&owner, &label).expect("an imported block verifies");
    let other = fresh("other.db");
    other.import_block(&exported, None, None, &Author::Partner, 3_000).expect("its export imports elsewhere");
    let copied = other.export_block(&owner, &label, &Author::Partner).expect("the copy exports");
    assert_eq!(copied, exported, "a block imported elsewhere exports differently");
});
