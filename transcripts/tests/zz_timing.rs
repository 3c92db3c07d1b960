use std::sync::Arc;
use std::time::Instant;
use pactum_transcripts::*;
#[test]
fn timing() {
    let a = Ed25519Signer::from_seed(KeyId::new("agent:a#1").unwrap(), &[1; 32]);
    let mut ring = KeyRing::new();
    ring.insert(KeyId::new("agent:a#1").unwrap(), a.verifying_key()).unwrap();
    let sid = StreamId::new("s1").unwrap();
    let t = Instant::now();
    let ts = TranscriptStream::open(MemoryStore::new(), sid.clone(), Arc::new(ManualClock::new(5))).unwrap();
    for _ in 0..24 { ts.append(EventKind::new("k").unwrap(), serde_json::json!({"a":1}), Some(&a)).unwrap(); }
    eprintln!("24 appends signed: {:?}", t.elapsed());
    let ev = ts.events(0).unwrap();
    let t = Instant::now();
    let r = verify_events(&sid, &ev, &ring, None);
    eprintln!("verify 24: {:?} {}", t.elapsed(), r.is_valid());
    let t = Instant::now();
    for e in &ev { ring.get(e.signer.as_ref().unwrap()).unwrap().verify_strict(e.hash.as_bytes(), &ed25519_dalek_sig(e)).unwrap(); }
    eprintln!("24 strict: {:?}", t.elapsed());
}
fn ed25519_dalek_sig(e: &Event) -> ed25519_dalek::Signature { ed25519_dalek::Signature::from_bytes(e.sig.unwrap().as_bytes()) }
