//! Medians and tails of repeated measurements, and the result rows every benchmark reports.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Summary of repeated samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
}

/// Summarises samples (any unit). Panics on an empty slice: a benchmark with no samples is a bug.
pub fn summarize(samples: &[f64]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize];
    Summary {
        n: v.len(),
        median: pick(0.5),
        p99: pick(0.99),
        min: v[0],
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line of the results table: a measurement beside its same-run baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: String,
    pub name: String,
    pub unit: String,
    pub value: Summary,
    pub baseline_name: Option<String>,
    pub baseline: Option<Summary>,
    /// value median / baseline median.
    pub ratio: Option<f64>,
    pub note: Option<String>,
}

impl Row {
    pub fn new(group: &str, name: &str, unit: &str, value: Summary) -> Self {
        Self {
            group: group.into(),
            name: name.into(),
            unit: unit.into(),
            value,
            baseline_name: None,
            baseline: None,
            ratio: None,
            note: None,
        }
    }

    pub fn against(mut self, name: &str, baseline: Summary) -> Self {
        self.ratio = Some(self.value.median / baseline.median);
        self.baseline_name = Some(name.into());
        self.baseline = Some(baseline);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}

/// Renders rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| group | measurement | median | p99 | baseline (same run) | baseline median | ratio | note |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let base = r.baseline.map_or(String::from("–"), |b| {
            format!("{:.3} {}", b.median, r.unit)
        });
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} {} | {:.3} {} | {} | {} | {} | {} |",
            r.group,
            r.name,
            r.value.median,
            r.unit,
            r.value.p99,
            r.unit,
            r.baseline_name.as_deref().unwrap_or("–"),
            base,
            r.ratio.map_or(String::from("–"), |x| format!("{x:.2}×")),
            r.note.as_deref().unwrap_or(""),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_tail() {
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median, s.min, s.p99, s.n), (3.0, 1.0, 5.0, 5));
    }
}
