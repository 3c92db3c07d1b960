//! `pactum acp`: the Agent Client Protocol server editors and scripts talk to.

pub mod plain;
