//! Flags, the results file, percentiles and the process's own measurements.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// `--key value` flags.
#[derive(Debug)]
pub struct Flags {
    values: HashMap<String, String>,
    /// The command line, to print beside each figure.
    pub command: String,
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let Some(key) = key.strip_prefix("--") else {
                bail!("expected --key, got {key}");
            };
            let value = it.next().ok_or_else(|| anyhow!("--{key} needs a value"))?;
            values.insert(key.to_string(), value.clone());
        }
        // The command line with the run's temporary paths named rather than spelled out.
        let mut words = vec!["capacity".to_string()];
        let mut previous = String::new();
        for arg in std::env::args().skip(1) {
            let word = match previous.as_str() {
                "--dir" => "$TMPDIR".to_string(),
                "--results" => "results.tsv".to_string(),
                "--export" => "$EXPORT_DIR".to_string(),
                "--machine" => "machine.txt".to_string(),
                "--out" => "docs".to_string(),
                _ => arg.clone(),
            };
            words.push(word);
            previous = arg;
        }
        let command = words.join(" ");
        Ok(Flags { values, command })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn path(&self, key: &str) -> Result<PathBuf> {
        self.get(key)
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("--{key} is required"))
    }

    pub fn number(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .replace('_', "")
                .parse()
                .with_context(|| format!("--{key} {v}")),
        }
    }

    /// The results file, opened for appending.
    pub fn results(&self) -> Result<Results> {
        let path = self.path("results")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Results {
            file,
            command: self.command.clone(),
        })
    }
}

/// The rows this process appends.
#[derive(Debug)]
pub struct Results {
    file: std::fs::File,
    command: String,
}

impl Results {
    /// Appends one figure and prints it.
    pub fn row(&mut self, name: &str, scale: u64, value: f64, unit: &str) -> Result<()> {
        println!("{name} @ {scale}: {value:.3} {unit}");
        writeln!(
            self.file,
            "{name}\t{scale}\t{value}\t{unit}\t{}",
            self.command
        )?;
        Ok(())
    }

    /// Appends the p50 and p99 of `samples` in microseconds.
    /// Rows `{prefix}/stored key+value bytes per {unit}: {keyspace}` and their total: the keys
    /// and values `engine` holds per unit, before its own overhead (block indexes, filters,
    /// compression), so the rows say which keyspace a unit's bytes go to.
    pub fn stored_bytes(
        &mut self,
        prefix: &str,
        unit: &str,
        engine: &dyn engine::Engine,
        keyspaces: &[&str],
        scale: u64,
        units: usize,
    ) -> Result<()> {
        let mut total = 0usize;
        let snapshot = engine.snapshot()?;
        for name in keyspaces {
            let keyspace = engine.keyspace(name)?;
            let (mut keys, mut bytes) = (0usize, 0usize);
            for entry in snapshot.scan(
                keyspace,
                engine::ScanRange::all(),
                engine::Direction::Forward,
            )? {
                let (key, value) = entry?;
                keys += 1;
                bytes += key.len() + value.len();
            }
            total += bytes;
            println!("{name}: {keys} keys, {bytes} bytes of keys and values");
            self.row(
                &format!("{prefix}/stored key+value bytes per {unit}: {name}"),
                scale,
                bytes as f64 / units as f64,
                "B",
            )?;
        }
        self.row(
            &format!("{prefix}/stored key+value bytes per {unit}: total"),
            scale,
            total as f64 / units as f64,
            "B",
        )
    }

    /// RocksDB's table files per keyspace, compressed as on disk (`rocksdb.total-sst-files-size`
    /// after a flush): where the directory's bytes go, which the raw key and value sizes of
    /// [`Results::stored_bytes`] do not say once prefixes are shared and blocks compressed.
    pub fn table_bytes(
        &mut self,
        what: &str,
        unit: &str,
        engine: &engine::RocksEngine,
        keyspaces: &[&str],
        scale: u64,
        units: usize,
    ) -> Result<()> {
        let mut total = 0u64;
        for name in keyspaces {
            let keyspace = engine::Engine::keyspace(engine, name)?;
            let bytes = engine
                .property_int(keyspace, "rocksdb.total-sst-files-size")?
                .unwrap_or(0);
            total += bytes;
            self.row(
                &format!("{what} per {unit}: {name}"),
                scale,
                bytes as f64 / units as f64,
                "B",
            )?;
        }
        self.row(
            &format!("{what} per {unit}: total"),
            scale,
            total as f64 / units as f64,
            "B",
        )
    }

    pub fn latencies(&mut self, name: &str, scale: u64, mut samples: Vec<Duration>) -> Result<()> {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        self.row(&format!("{name} p50"), scale, micros(at(0.5)), "µs")?;
        self.row(&format!("{name} p99"), scale, micros(at(0.99)), "µs")
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Bytes of the files under `path`.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// This process's resident and peak resident memory in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A small deterministic generator.
#[derive(Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
