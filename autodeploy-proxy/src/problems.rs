//! Reading a configuration file while collecting every problem in it, rather than stopping at
//! the first: syntax errors, unknown keys, missing fields, values of the wrong type or form,
//! and the meaning checks of [`GatewayConfig::validate`], each with its line and field, in
//! file order.
//!
//! serde stops at the first error of a value, so the file is deserialised repeatedly from
//! toml's spanned document: each error's span names the key it is about, that key is taken
//! out (or, for a missing field, a stand-in value put in) and the rest is read again, until
//! it reads. What was taken out or stood in for is then not judged again by the meaning
//! checks.

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::config::GatewayConfig;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line it is on; `None` when it is about the file as a whole.
    pub line: Option<usize>,
    /// The field, e.g. `deployment[1].max_instances`; empty for a syntax error.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem of one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// The most rounds of "take the faulty key out and read again"; a file has fewer problems.
const MAX_ROUNDS: usize = 500;

/// Values tried in place of a missing field, so the fields after it are read too.
fn stand_ins() -> [DeValue<'static>; 6] {
    [
        DeValue::String("1s".into()),
        DeValue::Integer(toml::de::DeInteger::default()),
        DeValue::Boolean(false),
        DeValue::Table(DeTable::new()),
        DeValue::Array(DeArray::new()),
        DeValue::Float(toml::de::DeFloat::default()),
    ]
}

/// One step from a table or array to a value inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A field's name as users write it: `deployment[1].queue.timeout`.
fn field_name(path: &[Step]) -> String {
    let mut name = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(key);
            }
            Step::Index(i) => name.push_str(&format!("[{i}]")),
        }
    }
    name
}

/// Reads, parses and validates configuration `text`; all of its problems when it has any.
pub fn read(text: &str) -> Result<GatewayConfig, Problems> {
    let lines = Lines::new(text);
    let (document, syntax) = DeTable::parse_recoverable(text);
    let mut problems: Vec<Problem> = syntax
        .iter()
        .map(|e| Problem {
            line: e.span().map(|s| lines.of(s.start)),
            field: String::new(),
            message: e.message().trim().to_owned(),
        })
        .collect();
    let mut reader = Reader {
        document: document.into_inner(),
        lines: &lines,
        stand_in_spans: text.len() + 1..text.len() + 1,
        judged: Vec::new(),
        problems: Vec::new(),
    };
    let config = reader.read_all();
    problems.append(&mut reader.problems);
    if let Some(config) = &config
        && let Err(errors) = config.validate()
    {
        for error in errors.0 {
            if reader.judged.iter().any(|f| covers(f, &error.field)) {
                continue;
            }
            problems.push(Problem {
                line: reader.line_of(&error.field),
                field: error.field,
                message: error.message,
            });
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(Problems(problems)),
    }
}

/// Whether a problem already reported on field `judged` covers `field` (the same field, or
/// one inside it).
fn covers(judged: &str, field: &str) -> bool {
    field == judged
        || field
            .strip_prefix(judged)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

/// The document being read and what was found so far.
struct Reader<'a> {
    document: DeTable<'a>,
    lines: &'a Lines,
    /// Spans given to stand-in values: past the end of the text, so no real value has them.
    stand_in_spans: Range<usize>,
    /// Fields reported, taken out or stood in for.
    judged: Vec<String>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    /// Deserialises the document until it reads, recording each problem on the way.
    fn read_all(&mut self) -> Option<GatewayConfig> {
        let mut stand_in: Option<(Vec<Step>, String, usize)> = None;
        for _ in 0..MAX_ROUNDS {
            let whole = Spanned::new(0..0, DeValue::Table(self.document.clone()));
            let error = match GatewayConfig::deserialize(toml::de::ValueDeserializer::from(whole)) {
                Ok(config) => return Some(config),
                Err(error) => error,
            };
            let span = error.span();
            // A stand-in of the wrong type: try the next one.
            if let (Some((path, key, tried)), Some(span)) = (&stand_in, &span)
                && *span == self.stand_in_spans
            {
                let (path, key, tried) = (path.clone(), key.clone(), tried + 1);
                if !self.put_stand_in(&path, &key, tried) {
                    return None;
                }
                stand_in = Some((path, key, tried));
                continue;
            }
            let message = error.message().trim().to_owned();
            let path = span
                .as_ref()
                .map(|s| locate(&self.document, s))
                .unwrap_or_default();
            if let Some(missing) = missing_field(&message) {
                let mut field = path.clone();
                field.push(Step::Key(missing.to_owned()));
                let name = field_name(&field);
                let missing = missing.to_owned();
                if !self.judged.contains(&name) {
                    self.report(span.map(|s| s.start), name, message);
                }
                if !self.put_stand_in(&path, &missing, 0) {
                    return None;
                }
                stand_in = Some((path, missing, 0));
                continue;
            }
            self.report(span.map(|s| s.start), field_name(&path), message);
            if path.is_empty() || !remove(&mut self.document, &path) {
                return None;
            }
        }
        None
    }

    fn report(&mut self, at: Option<usize>, field: String, message: String) {
        self.judged.push(field.clone());
        self.problems.push(Problem {
            line: at.map(|at| self.lines.of(at)),
            field,
            message,
        });
    }

    /// Puts stand-in number `which` for the missing `key` into the table at `path`; false
    /// when none is left to try.
    fn put_stand_in(&mut self, path: &[Step], key: &str, which: usize) -> bool {
        let Some(value) = stand_ins().into_iter().nth(which) else {
            return false;
        };
        let Some(table) = table_at(&mut self.document, path) else {
            return false;
        };
        table.insert(
            Spanned::new(self.stand_in_spans.clone(), key.to_owned().into()),
            Spanned::new(self.stand_in_spans.clone(), value),
        );
        true
    }

    /// The line of `field` (`deployment[1].queue.timeout`): its key's, or the line of the
    /// nearest enclosing table that the file has.
    fn line_of(&self, field: &str) -> Option<usize> {
        let mut table = &self.document;
        let mut line = None;
        for part in field.split('.') {
            let (key, index) = match part.split_once('[') {
                Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let Some((k, v)) = table.get_key_value(key) else {
                break;
            };
            if k.span() == self.stand_in_spans {
                break;
            }
            line = Some(self.lines.of(k.span().start));
            let mut value = v;
            if let Some(i) = index {
                match value.get_ref() {
                    DeValue::Array(items) if i < items.len() => {
                        value = &items[i];
                        line = Some(self.lines.of(value.span().start));
                    }
                    _ => break,
                }
            }
            match value.get_ref() {
                DeValue::Table(inner) => table = inner,
                _ => break,
            }
        }
        line
    }
}

/// The field name in serde's "missing field `name`" message.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(name, _)| name)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer != &(0..0)
}

/// The path to the innermost key or array item whose key or value contains `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Vec<Step> {
    let mut path = Vec::new();
    let mut current = Some(table);
    while let Some(table) = current.take() {
        for (key, value) in table.iter() {
            if contains(&key.span(), span) {
                path.push(Step::Key(key.get_ref().to_string()));
                return path;
            }
            if contains(&value.span(), span) || value_contains(value.get_ref(), span) {
                path.push(Step::Key(key.get_ref().to_string()));
                current = descend(value.get_ref(), span, &mut path);
                break;
            }
        }
    }
    path
}

/// Whether something inside `value` (a table's keys or values, an array's items) contains
/// `span`: a table's own span does not always cover what the file wrote under its header.
fn value_contains(value: &DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(table) => table.iter().any(|(k, v)| {
            contains(&k.span(), span)
                || contains(&v.span(), span)
                || value_contains(v.get_ref(), span)
        }),
        DeValue::Array(items) => items
            .iter()
            .any(|v| contains(&v.span(), span) || value_contains(v.get_ref(), span)),
        _ => false,
    }
}

/// From `value` (which contains `span`), the table to keep searching in, stepping through an
/// array item when `value` is an array.
fn descend<'v, 'i>(
    value: &'v DeValue<'i>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
) -> Option<&'v DeTable<'i>> {
    match value {
        DeValue::Table(table) if table_contains(table, span) => Some(table),
        DeValue::Array(items) => {
            let (i, item) = items.iter().enumerate().find(|(_, item)| {
                contains(&item.span(), span) || value_contains(item.get_ref(), span)
            })?;
            // Only tables in an array are entered: an error in a plain array is the key's.
            let DeValue::Table(table) = item.get_ref() else {
                return None;
            };
            path.push(Step::Index(i));
            table_contains(table, span).then_some(table)
        }
        _ => None,
    }
}

/// Whether one of `table`'s keys or values contains `span` (else the span is the table's own).
fn table_contains(table: &DeTable<'_>, span: &Range<usize>) -> bool {
    value_contains(&DeValue::Table(table.clone()), span)
}

/// The table at `path`, if it is one.
fn table_at<'d, 'i>(document: &'d mut DeTable<'i>, path: &[Step]) -> Option<&'d mut DeTable<'i>> {
    let mut table = document;
    let mut steps = path.iter().peekable();
    while let Some(step) = steps.next() {
        let Step::Key(key) = step else { return None };
        let mut value = table.get_mut(key.as_str())?.get_mut();
        if let Some(Step::Index(i)) = steps.peek() {
            let DeValue::Array(items) = value else {
                return None;
            };
            value = items.get_mut(*i)?.get_mut();
            steps.next();
        }
        match value {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    Some(table)
}

/// Takes the key at the end of `path` out of the document (for a path ending in an array
/// item, the array's key); false when there is nothing there.
fn remove(document: &mut DeTable<'_>, path: &[Step]) -> bool {
    let end = path.iter().rposition(|step| matches!(step, Step::Key(_)));
    let Some(end) = end else {
        return false;
    };
    let Step::Key(key) = &path[end] else {
        return false;
    };
    table_at(document, &path[..end])
        .and_then(|table| table.remove(key.as_str()))
        .is_some()
}

/// Byte offsets to 1-based line numbers.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    fn of(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        read(text)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_problem_comes_in_one_run_in_file_order_with_line_and_field() {
        let text = r#"[gateway]
listen_addr = "127.0.0.1:1"
drain_timeout = 5

[[deployment]]
id = "a"
start_command = "true"
idle_retention = "1m"
max_instances = "two"
queue = { max_waiting = 10, timeout = "soon" }

[[deployment]]
name = "no id"
start_command = "true"
idle_retention = "1m"
max_instances = 0
upstream = "http3"
colour = "blue"
"#;
        let found = problems(text);
        let expected = [
            "line 2: gateway.listen_addr: unknown field",
            "line 3: gateway.drain_timeout: invalid type: integer",
            "line 9: deployment[0].max_instances: invalid type: string \"two\"",
            "line 10: deployment[0].queue.timeout: ",
            "line 12: deployment[1].id: missing field `id`",
            "line 16: deployment[1].max_instances: must be",
            "line 17: deployment[1].upstream: unknown variant `http3`",
            "line 18: deployment[1].colour: unknown field",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "{found:?} vs {expected:?}");
        }
    }

    #[test]
    fn syntax_errors_have_their_line() {
        let found = problems("[gateway]\nlisten = \"127.0.0.1:1\"\nadmin_token = \n");
        assert!(found[0].starts_with("line 3: "), "{found:?}");
    }

    #[test]
    fn a_good_file_reads() {
        let config = read(
            "[[deployment]]\nid = \"a\"\nstart_command = \"true\"\nidle_retention = \"1m\"\nmax_instances = 1\n",
        )
        .unwrap();
        assert_eq!(config.deployments[0].id, "a");
    }

    #[test]
    fn a_deployment_table_missing_everything_names_each_field_once() {
        let found = problems("[[deployment]]\nname = \"x\"\n");
        assert_eq!(
            found,
            [
                "line 1: deployment[0].id: missing field `id`",
                "line 1: deployment[0].idle_retention: missing field `idle_retention`",
                "line 1: deployment[0].max_instances: missing field `max_instances`",
                // Optional in the file, required by the local provider.
                "line 1: deployment[0].start_command: must not be empty",
            ]
        );
    }
}
