//! Several sessions at once in one process: `negotiate_many` over threads sharing one runtime
//! and one constellation. Each session decides as it would alone; streams never interleave; the
//! order across streams is (time, stream id, seq).

use std::sync::Arc;

use pactum_memory::Constellation;
use pactum_runtime::check_constellation;
use pactum_runtime::session::model::{Phase, SessionState};
use pactum_runtime::session::parallel::TotalOrderKey;
use pactum_runtime::session::replay::replay_session;
use pactum_runtime::session::shell::{NewSession, Quiet};
use pactum_transcripts::Event;

mod common;

use common::{events_of, runtime_at};

fn request(seed: u64, members: &[(&str, u64)]) -> NewSession {
    common::request_for(seed, 30, true, members)
}

/// Every third session is a coalition of three.
fn requests() -> Vec<NewSession> {
    (0..24_u64)
        .map(|i| if i % 3 == 0 { request(100 + i, &[("alice", 2), ("bob", 1)]) } else { request(100 + i, &[]) })
        .collect()
}

/// What a session decided, without the ledger's transfer ids (which depend on the commit order
/// of concurrent sessions): event kinds and signers, the agreement, the outcome.
fn decisions(db: &Arc<Constellation>, state: &SessionState) -> Vec<String> {
    let mut seen: Vec<String> = events_of(db, state)
        .iter()
        .map(|e| format!("{} {} {:?}", e.seq, e.kind.as_str(), e.signer.as_ref().map(|k| k.as_str())))
        .collect();
    seen.push(format!("{:?} {:?}", state.phase, state.agreement.as_ref().map(|a| (&a.provider, &a.price))));
    seen
}

#[test]
fn sessions_run_concurrently_decide_as_they_do_one_at_a_time() {
    let dir = tempfile::tempdir().expect("dir");
    let sequential = runtime_at(&dir.path().join("one.pactum"), "p");
    let alone: Vec<SessionState> = requests()
        .into_iter()
        .map(|r| sequential.negotiate(r, &mut pactum_runtime::session::shell::DeclineAll, &mut Quiet).expect("ok"))
        .collect();
    let concurrent = runtime_at(&dir.path().join("many.pactum"), "p");
    let together: Vec<SessionState> =
        concurrent.negotiate_many(requests(), 8).into_iter().map(|outcome| outcome.expect("negotiated")).collect();
    assert_eq!(together.len(), alone.len());
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!(a.session_id(), b.session_id());
        assert_eq!(decisions(sequential.constellation(), a), decisions(concurrent.constellation(), b));
        assert!(matches!(b.phase, Phase::Completed | Phase::Failed));
        let report = replay_session(concurrent.constellation(), b.session_id().expect("id")).expect("replay");
        assert!(report.is_consistent(), "{:#?}", report.problems);
    }
    let check = check_constellation(concurrent.constellation()).expect("check");
    assert!(check.is_sound(), "{:#?}", check.problems);
    assert_eq!(check.sessions_checked, 24);
    assert!(check.sessions_resumable.is_empty());
    // Nobody owns an ended session.
    let rows = concurrent.constellation().session_streams("session:").expect("rows");
    assert!(rows.iter().all(|row| row.owner.is_none()), "{rows:#?}");
}

#[test]
fn the_order_across_streams_extends_each_streams_own_order() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = runtime_at(&dir.path().join("c.pactum"), "p");
    let states: Vec<SessionState> =
        runtime.negotiate_many(requests(), 4).into_iter().map(|outcome| outcome.expect("negotiated")).collect();
    let mut all: Vec<Event> = states.iter().flat_map(|state| events_of(runtime.constellation(), state)).collect();
    all.sort_by_key(TotalOrderKey::of);
    let keys: Vec<TotalOrderKey> = all.iter().map(TotalOrderKey::of).collect();
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "a total order: no two events share a key");
    let mut last_seq: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for event in &all {
        let stream = event.stream.as_str().to_owned();
        let expected = last_seq.get(&stream).map_or(0, |seq| seq + 1);
        assert_eq!(event.seq, expected, "{stream}: events appear in their stream's order");
        last_seq.insert(stream, event.seq);
    }
}
