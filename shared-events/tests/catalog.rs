//! The event catalog in `docs/design.md` is generated from the contract, so
//! it cannot drift: this test renders it from `shared-events` (producers,
//! keys, consumers and the saga steps each event calls for from the
//! `events!` declaration; payload fields from the golden samples, each
//! field's optionality by decoding the sample without it) and fails when
//! the document differs. Regenerate deliberately with
//! `UPDATE_CATALOG=1 cargo test -p shared-events --test catalog`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test, with its message"
)]

use serde_json::Value;
use shared_events::{Decoded, Envelope, EventType, Service, Topic};
use std::fmt::Write as _;
use std::path::PathBuf;

const BEGIN: &str = "<!-- event-catalog:begin (generated from shared-events by shared-events/tests/catalog.rs; do not edit by hand) -->";
const END: &str = "<!-- event-catalog:end -->";

fn design_doc() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/design.md")
}

fn golden(event_type: EventType) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{event_type}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A field's wire type, read off the sample value.
fn kind(name: &str, value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "bool",
        Value::Number(_) if name == "amount" || name == "price" || name == "balance_after" => {
            "i64 (minor units)"
        }
        Value::Number(_) => "integer",
        Value::String(_) if name == "reason" => "Reason",
        Value::String(s) if uuid::Uuid::parse_str(s).is_ok() => "UUID",
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => "UTC time",
        _ => "string",
    }
}

/// Whether the sample still decodes as its type with `field` removed.
fn optional(sample: &Value, field: &str) -> bool {
    let mut without = sample.clone();
    without["payload"].as_object_mut().unwrap().remove(field);
    matches!(
        Envelope::decode(without.to_string().as_bytes()),
        Ok(Decoded::Known(_))
    )
}

fn services(list: impl IntoIterator<Item = Service>) -> String {
    let names: Vec<String> = list.into_iter().map(|s| format!("`{s}`")).collect();
    if names.is_empty() {
        "— (read by tools only)".to_string()
    } else {
        names.join(", ")
    }
}

fn names(types: &[EventType], separator: &str) -> String {
    let names: Vec<String> = types.iter().map(|t| format!("`{t}`")).collect();
    names.join(separator)
}

/// The saga steps an event calls for: who answers, with which events.
fn answers(event_type: EventType) -> String {
    let steps: Vec<String> = event_type
        .steps()
        .iter()
        .map(|step| {
            let mut text = format!("`{}`: {}", step.by, names(step.answers, " or "));
            if let Some(after) = step.after {
                write!(text, " (if the saga has a `{after}`)").unwrap();
            }
            if !step.unless.is_empty() {
                write!(text, " (not after {})", names(step.unless, " or ")).unwrap();
            }
            text
        })
        .collect();
    if steps.is_empty() {
        "—".to_string()
    } else {
        steps.join("; ")
    }
}

fn render() -> String {
    let mut out = String::new();
    out.push_str("| topic | producer | dead letters | consumer groups |\n|---|---|---|---|\n");
    for topic in Topic::ALL {
        let producer = Service::ALL
            .into_iter()
            .find(|s| s.topic() == topic)
            .unwrap();
        let readers = Service::ALL
            .into_iter()
            .filter(|s| s.consumes().contains(&topic));
        writeln!(
            out,
            "| `{topic}` | `{producer}` | `{}` | {} |",
            topic.dead_letter_name(),
            services(readers)
        )
        .unwrap();
    }
    out.push_str(
        "\n| event | topic | key | payload | consumed by | answered by |\n|---|---|---|---|---|---|\n",
    );
    for &event_type in EventType::ALL {
        let sample = golden(event_type);
        let fields: Vec<String> = sample["payload"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| {
                let optional = if optional(&sample, name) { "?" } else { "" };
                format!("`{name}{optional}`: {}", kind(name, value))
            })
            .collect();
        writeln!(
            out,
            "| `{event_type}` | `{}` | `{}` | {} | {} | {} |",
            event_type.producer().topic(),
            event_type.key_field(),
            fields.join(", "),
            services(event_type.consumers().iter().copied()),
            answers(event_type)
        )
        .unwrap();
    }
    out
}

#[test]
fn the_design_documents_event_catalog_matches_the_contract() {
    let path = design_doc();
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN}", path.display()));
    let body_start = start + BEGIN.len() + 1;
    let end = doc[body_start..]
        .find(END)
        .map(|i| body_start + i)
        .unwrap_or_else(|| panic!("{} has no {END}", path.display()));
    let expected = render();
    if std::env::var_os("UPDATE_CATALOG").is_some() {
        let updated = format!("{}{expected}{}", &doc[..body_start], &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &doc[body_start..end],
        expected,
        "docs/design.md's event catalog differs from shared-events; \
         run UPDATE_CATALOG=1 cargo test -p shared-events --test catalog and review the diff"
    );
}
