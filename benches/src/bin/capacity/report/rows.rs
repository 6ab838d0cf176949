//! The rows of one capacity run (`results.tsv`) and how a figure is printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// One figure of the run.
#[derive(Clone, Debug)]
struct Row {
    name: String,
    scale: u64,
    value: f64,
    unit: String,
    command: String,
}

/// The rows of a run, in the order they were written.
#[derive(Debug)]
pub(super) struct Run {
    rows: Vec<Row>,
}

impl Run {
    pub(super) fn load(path: &Path) -> Result<Run> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let rows = text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.splitn(5, '\t').collect();
                (f.len() == 5).then(|| Row {
                    name: f[0].to_string(),
                    scale: f[1].parse().unwrap_or(0),
                    value: f[2].parse().unwrap_or(f64::NAN),
                    unit: f[3].to_string(),
                    command: f[4].to_string(),
                })
            })
            .collect();
        Ok(Run { rows })
    }

    /// The names of the rows, in the order they were written (repeated per scale).
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|r| r.name.as_str())
    }

    /// The scales measured under `prefix`, ascending.
    pub(super) fn scales(&self, prefix: &str) -> Vec<u64> {
        let mut scales: Vec<u64> = self
            .rows
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .map(|r| r.scale)
            .collect();
        scales.sort_unstable();
        scales.dedup();
        scales
    }

    /// The value of `name` at `scale` (the last one written).
    pub(super) fn get(&self, name: &str, scale: u64) -> Option<f64> {
        self.rows
            .iter()
            .rev()
            .find(|r| r.name == name && r.scale == scale)
            .map(|r| r.value)
            .filter(|v| v.is_finite())
    }

    /// The value of `name` at its largest scale, with that scale.
    pub(super) fn largest(&self, name: &str) -> Option<(u64, f64)> {
        self.rows
            .iter()
            .filter(|r| r.name == name && r.value.is_finite())
            .max_by_key(|r| r.scale)
            .map(|r| (r.scale, r.value))
    }

    /// The growth of `name` per unit of scale between its smallest and largest scale.
    pub(super) fn slope(&self, name: &str) -> Option<f64> {
        let points = self.series(name);
        let (first, last) = (points.first()?, points.last()?);
        (last.0 > first.0).then(|| (last.1 - first.1) / (last.0 - first.0))
    }

    pub(super) fn series(&self, name: &str) -> Vec<(f64, f64)> {
        let mut points: BTreeMap<u64, f64> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| r.name == name) {
            if r.value.is_finite() && r.value > 0.0 {
                points.insert(r.scale, r.value);
            }
        }
        points.into_iter().map(|(s, v)| (s as f64, v)).collect()
    }

    /// A table of every row whose name starts with `prefix`: one line per name, one column
    /// per scale.
    pub(super) fn table(&self, prefix: &str, scale_label: &str) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.name.starts_with(prefix))
            .collect();
        let scales = self.scales(prefix);
        let mut names: Vec<(&str, &str)> = Vec::new();
        for r in &rows {
            if !names.iter().any(|(n, _)| *n == r.name) {
                names.push((&r.name, &r.unit));
            }
        }
        if names.is_empty() {
            return "(not measured in this run)\n".to_string();
        }
        let mut out = format!("| {scale_label} |");
        for s in &scales {
            let _ = write!(out, " {} |", thousands(*s));
        }
        out.push_str("\n| --- |");
        for _ in &scales {
            out.push_str(" ---: |");
        }
        out.push('\n');
        for (name, unit) in names {
            let _ = write!(out, "| {} ({unit}) |", &name[prefix.len()..]);
            for s in &scales {
                match self.get(name, *s) {
                    Some(v) => {
                        let _ = write!(out, " {} |", number(v));
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        out
    }

    /// [`Run::table`] and then [`Run::commands`] for `prefix`, each followed by a blank line.
    pub(super) fn table_and_commands(&self, prefix: &str, scale_label: &str) -> String {
        format!(
            "{}\n{}\n",
            self.table(prefix, scale_label),
            self.commands(prefix)
        )
    }

    /// The distinct commands of the rows under `prefix`.
    pub(super) fn commands(&self, prefix: &str) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for r in self.rows.iter().filter(|r| r.name.starts_with(prefix)) {
            if !seen.contains(&r.command.as_str()) {
                seen.push(&r.command);
            }
        }
        let mut out = String::from("```sh\n");
        for c in seen {
            out.push_str(c);
            out.push('\n');
        }
        out.push_str("```\n");
        out
    }
}

pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Three significant digits, thousands separated.
pub(super) fn number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let digits = v.abs().log10().floor() as i32 + 1;
        let unit = 10f64.powi((digits - 3).max(0));
        let rounded = (v / unit).round() * unit;
        let sign = if rounded < 0.0 { "-" } else { "" };
        format!("{sign}{}", thousands(rounded.abs() as u64))
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{}×", number(a / b)),
        _ => "—".to_string(),
    }
}
