//! Figures, their targets, and the one table they print as.
//!
//! Every figure is a value beside a baseline measured in the same run; the ratio is always
//! `value / baseline`. A target is a list of checks on the value or the ratio; a figure
//! whose checks do not all pass is `MISSED`, and the table says so.

use serde::Serialize;

/// What a quantity counts, so it prints with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Events per second.
    EventsPerSecond,
    /// Writes (or syncs) per second.
    WritesPerSecond,
    /// Migrations per second.
    MigrationsPerSecond,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
    /// Mebibytes (of memory).
    Mebibytes,
}

impl Unit {
    /// The unit's name as printed after a value.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::EventsPerSecond => "events/s",
            Unit::WritesPerSecond => "writes/s",
            Unit::MigrationsPerSecond => "migrations/s",
            Unit::Microseconds => "µs",
            Unit::Milliseconds => "ms",
            Unit::Bytes => "B",
            Unit::Mebibytes => "MiB",
        }
    }

    /// Whether a ratio between the two units means something: the same unit, or two rates
    /// (an event appended durably against a raw write + fdatasync).
    pub fn comparable(self, other: Unit) -> bool {
        self == other || (self.is_rate() && other.is_rate())
    }

    fn is_rate(self) -> bool {
        matches!(
            self,
            Unit::EventsPerSecond | Unit::WritesPerSecond | Unit::MigrationsPerSecond
        )
    }

    /// A value in this unit, formatted for the table.
    pub fn format(self, value: f64) -> String {
        let number = match self {
            Unit::EventsPerSecond | Unit::WritesPerSecond => group_thousands(value.round()),
            Unit::MigrationsPerSecond => {
                if value >= 100.0 {
                    group_thousands(value.round())
                } else {
                    format!("{value:.1}")
                }
            }
            Unit::Microseconds | Unit::Mebibytes => format!("{value:.1}"),
            Unit::Milliseconds => {
                if value >= 100.0 {
                    group_thousands(value.round())
                } else {
                    format!("{value:.2}")
                }
            }
            Unit::Bytes => group_thousands(value.round()),
        };
        format!("{number} {}", self.suffix())
    }
}

/// `1234567` as `1,234,567` (integers only; negative values keep their sign).
pub fn group_thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if rounded < 0.0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// A measured amount.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quantity {
    /// The number.
    pub value: f64,
    /// What it counts.
    pub unit: Unit,
}

impl Quantity {
    /// A quantity.
    pub fn new(value: f64, unit: Unit) -> Self {
        Quantity { value, unit }
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.unit.format(self.value))
    }
}

/// One check of a target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "check", content = "limit")]
pub enum Check {
    /// value ≥ limit.
    ValueAtLeast(f64),
    /// value < limit.
    ValueBelow(f64),
    /// value ≤ limit.
    ValueAtMost(f64),
    /// ratio ≥ limit.
    RatioAtLeast(f64),
    /// ratio ≤ limit.
    RatioAtMost(f64),
}

impl Check {
    fn passes(self, value: f64, ratio: Option<f64>) -> bool {
        match self {
            Check::ValueAtLeast(limit) => value >= limit,
            Check::ValueBelow(limit) => value < limit,
            Check::ValueAtMost(limit) => value <= limit,
            // A ratio target with no baseline cannot be met.
            Check::RatioAtLeast(limit) => ratio.is_some_and(|ratio| ratio >= limit),
            Check::RatioAtMost(limit) => ratio.is_some_and(|ratio| ratio <= limit),
        }
    }

    fn describe(self, unit: Unit) -> String {
        match self {
            Check::ValueAtLeast(limit) => format!("≥ {}", unit.format(limit)),
            Check::ValueBelow(limit) => format!("< {}", unit.format(limit)),
            Check::ValueAtMost(limit) => format!("≤ {}", unit.format(limit)),
            Check::RatioAtLeast(limit) => format!("ratio ≥ {}", format_ratio(limit)),
            Check::RatioAtMost(limit) => format!("ratio ≤ {}", format_ratio(limit)),
        }
    }
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Met,
    /// At least one check failed.
    Missed,
    /// The figure has no target: it is reported for context.
    NoTarget,
}

impl Verdict {
    /// As printed in the table's last column.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NoTarget => "—",
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// Its number in issue 7 with a letter, e.g. `1.c`.
    pub id: String,
    /// What was measured, with its sizes.
    pub name: String,
    /// The measurement.
    pub value: Quantity,
    /// What it is compared with (measured in the same run), and that measurement.
    pub baseline: Option<(String, Quantity)>,
    /// The checks that make the target; empty when the figure has none.
    pub target: Vec<Check>,
    /// Where the target comes from, when it is not issue 7 (e.g. "issue 2").
    pub target_source: Option<String>,
}

impl Figure {
    /// A figure with no baseline and no target yet.
    pub fn new(id: &str, name: impl Into<String>, value: Quantity) -> Self {
        Figure {
            id: id.to_string(),
            name: name.into(),
            value,
            baseline: None,
            target: Vec::new(),
            target_source: None,
        }
    }

    /// Sets the baseline.
    pub fn baseline(mut self, name: impl Into<String>, value: Quantity) -> Self {
        self.baseline = Some((name.into(), value));
        self
    }

    /// Adds a check to the target.
    pub fn check(mut self, check: Check) -> Self {
        self.target.push(check);
        self
    }

    /// Names where the target comes from.
    pub fn target_from(mut self, source: &str) -> Self {
        self.target_source = Some(source.to_string());
        self
    }

    /// `value / baseline`, when the baseline has a comparable unit and is not zero.
    pub fn ratio(&self) -> Option<f64> {
        let (_, baseline) = self.baseline.as_ref()?;
        (baseline.unit.comparable(self.value.unit) && baseline.value != 0.0)
            .then(|| self.value.value / baseline.value)
    }

    /// Whether the target is met.
    pub fn verdict(&self) -> Verdict {
        if self.target.is_empty() {
            return Verdict::NoTarget;
        }
        let ratio = self.ratio();
        if self
            .target
            .iter()
            .all(|check| check.passes(self.value.value, ratio))
        {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    /// The target as printed.
    pub fn target_text(&self) -> String {
        if self.target.is_empty() {
            return "—".to_string();
        }
        let checks: Vec<String> = self
            .target
            .iter()
            .map(|check| check.describe(self.value.unit))
            .collect();
        match &self.target_source {
            Some(source) => format!("{} ({source})", checks.join(" and ")),
            None => checks.join(" and "),
        }
    }
}

/// A ratio as printed: `2.31×`.
pub fn format_ratio(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.1 {
        // Two significant digits: 0.0047×, not 0.00×.
        let decimals = (-ratio.log10()).floor() as usize + 2;
        format!("{ratio:.decimals$}×")
    } else if ratio >= 100.0 {
        format!("{}×", group_thousands(ratio))
    } else if ratio >= 10.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// Renders the figures as one Markdown table.
pub fn render_table(figures: &[Figure]) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "figure".to_string(),
        "value".to_string(),
        "baseline (same run)".to_string(),
        "ratio".to_string(),
        "target".to_string(),
        "met".to_string(),
    ]];
    for figure in figures {
        rows.push([
            figure.id.clone(),
            figure.name.clone(),
            figure.value.to_string(),
            figure
                .baseline
                .as_ref()
                .map(|(name, value)| format!("{name}: {value}"))
                .unwrap_or_else(|| "—".to_string()),
            figure
                .ratio()
                .map(format_ratio)
                .unwrap_or_else(|| "—".to_string()),
            figure.target_text(),
            figure.verdict().label().to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Right-aligned: value and ratio.
    let right = [false, false, true, false, true, false, false];
    let mut out = String::new();
    for (index, row) in rows.iter().enumerate() {
        out.push('|');
        for column in 0..7 {
            let cell = &row[column];
            let pad = widths[column] - cell.chars().count();
            if right[column] {
                out.push_str(&format!(" {}{} |", " ".repeat(pad), cell));
            } else {
                out.push_str(&format!(" {}{} |", cell, " ".repeat(pad)));
            }
        }
        out.push('\n');
        if index == 0 {
            out.push('|');
            for column in 0..7 {
                let dashes = "-".repeat(widths[column].max(3));
                if right[column] {
                    out.push_str(&format!(" {}: |", &dashes[1..]));
                } else {
                    out.push_str(&format!(" {dashes} |"));
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ratios_keep_two_significant_digits() {
        assert_eq!(format_ratio(0.0047), "0.0047×");
        assert_eq!(format_ratio(0.05), "0.050×");
        assert_eq!(format_ratio(0.5), "0.50×");
        assert_eq!(format_ratio(14.04), "14.0×");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0.0), "0");
        assert_eq!(group_thousands(999.0), "999");
        assert_eq!(group_thousands(1000.0), "1,000");
        assert_eq!(group_thousands(1234567.4), "1,234,567");
        assert_eq!(group_thousands(-40000.0), "-40,000");
    }

    #[test]
    fn a_ratio_needs_a_baseline_of_a_comparable_unit() {
        let figure = Figure::new("x", "x", Quantity::new(10.0, Unit::Milliseconds))
            .baseline("b", Quantity::new(5.0, Unit::Microseconds));
        assert_eq!(figure.ratio(), None);
    }
}
