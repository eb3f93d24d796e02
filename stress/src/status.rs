//! The line protocol between a child and the harness.
//!
//! A child writes to stdout, one line each: `status k=v k=v ...` about every
//! 250 ms, `final k=v ...` once when it ends normally, and `error <text>`
//! when a check fails. Values are unsigned integers. Every scenario writes
//! `t_ms`, `ops` and `rss`; shrinkalloc children add `in_use`, `committed`,
//! `reclaim_passes`, `direct_passes`, `failed_charges` and the limits in
//! force, `hard_limit` and `soft_limit` (0: none); the rest are the
//! scenario's own (see each scenario).
//! Anything else on stdout is passed through to the log.

use std::fmt::Write as _;
use std::io::Write as _;

/// One parsed line from a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A periodic `status` line.
    Status(Fields),
    /// The `final` line.
    Final(Fields),
    /// An `error` line: a check failed; the text says which.
    Error(String),
    /// Anything else.
    Other(String),
}

/// The `key=value` pairs of a status or final line, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, u64)>);

impl Fields {
    /// The value of `key`, if the line has it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
    }
}

/// Parses one line of a child's stdout.
pub fn parse(line: &str) -> Line {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "status" | "final" => {
            let fields = rest
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            if word == "status" {
                Line::Status(Fields(fields))
            } else {
                Line::Final(Fields(fields))
            }
        }
        "error" => Line::Error(rest.to_string()),
        _ => Line::Other(line.to_string()),
    }
}

/// Writes a `status` (or, with `last`, `final`) line to stdout and flushes.
pub fn print(last: bool, fields: &[(&str, u64)]) {
    let mut line = String::from(if last { "final" } else { "status" });
    for (k, v) in fields {
        let _ = write!(line, " {k}={v}");
    }
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// Writes an `error` line to stdout (for the harness) and stderr (for people).
pub fn print_error(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "error {text}");
    let _ = out.flush();
    eprintln!("shrinkalloc-stress child: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_final_and_error_lines_parse() {
        let Line::Status(f) = parse("status t_ms=250 ops=1000 entries=12") else { panic!() };
        assert_eq!((f.get("ops"), f.get("entries"), f.get("nope")), (Some(1000), Some(12), None));
        assert!(matches!(parse("final ops=5"), Line::Final(f) if f.get("ops") == Some(5)));
        assert_eq!(parse("error key 3 corrupt"), Line::Error("key 3 corrupt".into()));
        assert_eq!(parse("hello"), Line::Other("hello".into()));
    }
}
