//! Plain-text tables for the console: a header, rows, and columns padded to their widest
//! cell, numbers right-aligned.

use std::fmt::Write;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: flush left.
    Left,
    /// Numbers: flush right.
    Right,
}

/// A table being filled row by row.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; names starting with `>` are right-aligned (the `>` is
    /// not printed).
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|name| match name.strip_prefix('>') {
                    Some(name) => (name.to_owned(), Align::Right),
                    None => ((*name).to_owned(), Align::Left),
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
        self
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, without trailing spaces.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(index, (name, _))| {
                self.rows
                    .iter()
                    .map(|row| row[index].chars().count())
                    .chain(std::iter::once(name.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        let header: Vec<&str> = self.columns.iter().map(|(name, _)| name.as_str()).collect();
        for cells in std::iter::once(header).chain(
            self.rows
                .iter()
                .map(|row| row.iter().map(String::as_str).collect()),
        ) {
            let mut line = String::new();
            for (index, cell) in cells.iter().enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                let width = widths[index];
                let _ = match self.columns[index].1 {
                    Align::Left => write!(line, "{cell:<width$}"),
                    Align::Right => write!(line, "{cell:>width$}"),
                };
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A share from 0 to 1 as a percentage with one decimal, e.g. `35.0%`.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A duration in days with one decimal, e.g. `20.5d`; `-` when unknown.
pub fn days(duration: Option<&prost_types::Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |duration| {
            let seconds = duration.seconds as f64 + f64::from(duration.nanos) / 1e9;
            format!("{:.1}d", seconds / 86_400.0)
        },
    )
}

/// A duration in the unit that reads best: seconds, minutes, hours or days.
pub fn human_duration(duration: Option<&prost_types::Duration>) -> String {
    let Some(duration) = duration else {
        return "-".to_owned();
    };
    let seconds = duration.seconds as f64 + f64::from(duration.nanos) / 1e9;
    match seconds.abs() {
        s if s < 60.0 => format!("{seconds:.1}s"),
        s if s < 3_600.0 => format!("{:.1}m", seconds / 60.0),
        s if s < 86_400.0 => format!("{:.1}h", seconds / 3_600.0),
        _ => format!("{:.1}d", seconds / 86_400.0),
    }
}

/// An amount in minor units as major units with two decimals and its currency, e.g.
/// `12,500.00 EUR`.
pub fn money(minor_units: i64, currency: &str) -> String {
    let sign = if minor_units < 0 { "-" } else { "" };
    let minor = minor_units.unsigned_abs();
    let whole = (minor / 100).to_string();
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}.{:02} {currency}", minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_their_widest_cell_and_numbers_align_right() {
        let mut table = Table::new(&["NAME", ">LEADS"]);
        table.row(["website", "1200"]).row(["trade-fair", "7"]);
        assert_eq!(
            table.render(),
            "NAME        LEADS\nwebsite      1200\ntrade-fair      7\n"
        );
    }

    #[test]
    fn money_is_grouped_in_thousands_with_its_minor_units() {
        assert_eq!(money(1_250_000, "EUR"), "12,500.00 EUR");
        assert_eq!(money(-5, "USD"), "-0.05 USD");
        assert_eq!(money(100_000_000, "EUR"), "1,000,000.00 EUR");
    }

    #[test]
    fn durations_read_in_their_natural_unit() {
        let duration = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(human_duration(Some(&duration(42))), "42.0s");
        assert_eq!(human_duration(Some(&duration(5_400))), "1.5h");
        assert_eq!(days(Some(&duration(172_800))), "2.0d");
        assert_eq!(days(None), "-");
        assert_eq!(percent(0.35), "35.0%");
    }
}
