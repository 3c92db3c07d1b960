//! Negotiation sessions: a sans-IO core ([`step`] over [`SessionState`]), the receipt format,
//! the shell that performs effects ([`AgentRuntime`]) and the replayer.

mod cosign;
pub mod model;
pub mod parallel;
pub mod receipt;
pub mod replay;
pub mod shell;
pub mod spending;
pub mod step;
pub mod story;
