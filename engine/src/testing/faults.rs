//! Fault injection at every engine operation of a store's script ([`every_fault`]).

use std::sync::Arc;

use crate::{Fault, FaultyEngine};

/// Runs `script` (steps 0, 1, ... of a store's writes, each opening the store over the
/// engine it is given) once with a write fault and once with a sync fault at every engine
/// operation N of a fault-free run, and checks each run:
///
/// - the steps acknowledged are exactly those whose operations all came before N, and every
///   later step fails (a store never acknowledges a write after one failed);
/// - after a simulated crash ([`FaultyEngine::crash`]: only what was synced survives),
///   `fingerprint` sees what it saw after the acknowledged steps of the fault-free run: every
///   acknowledged write is there and the failed one left no trace.
///
/// A fault planned on a flush strikes the same way whether it is a write or a sync fault, so
/// it is run once. Returns the distinct faults that struck (one per run).
///
/// # Panics
/// When a check fails, naming the fault, the operation and the steps acknowledged.
pub fn every_fault<S, F>(keyspaces: &[&str], steps: usize, script: S, fingerprint: F) -> u64
where
    S: Fn(&Arc<FaultyEngine>, usize) -> Result<(), String>,
    F: Fn(&Arc<FaultyEngine>) -> String,
{
    let (prints, ends, flushes) = reference(keyspaces, steps, &script, &fingerprint);
    let operations = *ends.last().expect("a script has steps");
    assert!(operations >= steps as u64, "{operations} operations");
    // Which operations are flushes, as the write-fault runs find out: the engine counts the
    // flushes among operations 1..=N and, poisoned by the fault, no later one.
    let mut flushes_up_to = vec![0u64; operations as usize + 1];
    let mut is_flush = vec![false; operations as usize + 1];
    let mut struck = 0;
    for fault in [Fault::Write, Fault::Sync] {
        for n in 1..=operations {
            if fault == Fault::Sync && is_flush[n as usize] {
                continue;
            }
            let engine = Arc::new(FaultyEngine::new(keyspaces).fail_at(n, fault));
            let mut done = 0;
            let mut failed = false;
            for step in 0..steps {
                match script(&engine, step) {
                    Ok(()) => {
                        assert!(
                            !failed,
                            "{fault:?} at {n}: step {step} succeeded after a failure"
                        );
                        done = step + 1;
                    }
                    Err(error) => {
                        assert!(!error.is_empty());
                        failed = true;
                    }
                }
            }
            assert!(failed, "{fault:?} at {n}: nothing failed");
            // The engine, not this loop, says the fault struck: it counted operation N.
            assert!(
                engine.operations() >= n,
                "{fault:?} at {n}: the engine made only {} operations",
                engine.operations()
            );
            let expected = ends.iter().filter(|&&end| end < n).count();
            assert_eq!(
                done, expected,
                "{fault:?} at {n}: the store acknowledged {done} steps, but {expected} ended \
                 before the failed operation"
            );
            if fault == Fault::Write {
                let n = n as usize;
                flushes_up_to[n] = engine.flushes();
                is_flush[n] = flushes_up_to[n] > flushes_up_to[n - 1];
            }
            struck += 1;
            let crashed = Arc::new(engine.crash());
            assert_eq!(
                fingerprint(&crashed),
                prints[done],
                "{fault:?} at operation {n}, after {done} acknowledged steps"
            );
        }
    }
    let found = is_flush.iter().filter(|&&f| f).count() as u64;
    assert_eq!(found, flushes, "flushes told apart from writes");
    assert_eq!(struck, 2 * operations - flushes);
    eprintln!("{steps} steps, {operations} engine operations of which {flushes} flushes");
    struck
}

/// A fault-free run of `script` over a fresh [`FaultyEngine`]: what `fingerprint` saw after
/// 0, 1, ... steps, the engine operations made by the end of each step, and of them the
/// flushes.
fn reference<S, F>(
    keyspaces: &[&str],
    steps: usize,
    script: S,
    fingerprint: F,
) -> (Vec<String>, Vec<u64>, u64)
where
    S: Fn(&Arc<FaultyEngine>, usize) -> Result<(), String>,
    F: Fn(&Arc<FaultyEngine>) -> String,
{
    let engine = Arc::new(FaultyEngine::new(keyspaces));
    let mut prints = vec![fingerprint(&engine)];
    for step in 0..steps {
        script(&engine, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
        prints.push(fingerprint(&engine));
    }
    // The operations of the script alone (a fingerprint's own, such as the flush a store's
    // open makes, are not the script's).
    let alone = Arc::new(FaultyEngine::new(keyspaces));
    let mut ends = Vec::new();
    for step in 0..steps {
        script(&alone, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
        ends.push(alone.operations());
    }
    (prints, ends, alone.flushes())
}
