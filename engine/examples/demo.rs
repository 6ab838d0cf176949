//! Opens (or creates) a RocksDB store at the path given, records this run in it, and prints
//! what the store holds: a smoke test of the default backend on a real disk.
//!
//! `cargo run -p engine --example demo -- data/demo-rocksdb`

use std::time::{SystemTime, UNIX_EPOCH};

use engine::keys::KeyBuilder;
use engine::{Direction, Durability, EngineConfig, ScanRange, WriteBatch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/demo-rocksdb".to_string());
    let engine = EngineConfig::rocksdb(&path).open(&["runs", "stats"])?;
    let runs = engine.keyspace("runs")?;
    let stats = engine.keyspace("stats")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    let mut batch = WriteBatch::new();
    batch.put(
        runs,
        KeyBuilder::new().u64(now).finish(),
        format!("pid {}", std::process::id()),
    );
    batch.counter_add(stats, b"runs", 1);
    engine.write(batch, Durability::Sync)?;

    println!("store: {path} ({})", engine.backend());
    println!("runs recorded: {}", engine.counter(stats, b"runs")?);
    let snapshot = engine.snapshot()?;
    for item in snapshot
        .scan(runs, ScanRange::all(), Direction::Reverse)?
        .take(5)
    {
        let (key, value) = item?;
        let at = engine::keys::KeyReader::new(&key).u64().unwrap_or_default();
        println!("  run at unix {at}: {}", String::from_utf8_lossy(&value));
    }
    Ok(())
}
