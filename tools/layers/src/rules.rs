//! The rules themselves, and the names they are made of: a change of
//! layout (the runtime's db room moving, a runtime item the events may
//! name) is a change to one of the constants below.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::parse::{self, FileFacts};
use crate::resolve::{module_path, CrateMap, Target};
use crate::{Rule, SourceFile, Violation};

/// A service's rooms, lowest first. lib.rs (wiring) and main.rs sit above
/// them all and may refer to any.
pub const SERVICE_ROOMS: [&str; 5] = ["domain", "store", "app", "api", "events"];

/// The other rooms each room may refer to. Lower never refers to higher,
/// and of the top rooms: `api` is HTTP over the use cases, so not `store`;
/// `events` only decodes and calls `app`, so not `domain`, `store` or `api`.
/// No room refers to lib.rs: the wiring is above them all.
const MAY_REFER_TO: [(&str, &[&str]); 5] = [
    ("domain", &[]),
    ("store", &["domain"]),
    ("app", &["domain", "store"]),
    ("api", &["domain", "app"]),
    ("events", &["app"]),
];

/// Crates that do I/O (a database, HTTP, Kafka, an async runtime, metrics
/// and tracing exporters, configuration files). A name matches itself and
/// `name_*` (`actix_web`, `tokio_util`, `diesel_migrations`).
pub const IO_CRATES: &[&str] = &[
    "diesel",
    "actix",
    "reqwest",
    "rdkafka",
    "tokio",
    "prometheus",
    "opentelemetry",
    "tracing_opentelemetry",
    "figment",
    "hyper",
    "libc",
];

/// The standard library's I/O modules, named as `std::<module>`.
const STD_IO_MODULES: &[&str] = &["fs", "net", "process"];

/// SQL: named only in a service's `store` (and `diesel_migrations` in
/// lib.rs, which embeds the migrations) and in the runtime's db room.
pub const SQL_CRATES: &[&str] = &["diesel", "diesel_migrations"];

/// The runtime crate as services name it.
pub const RUNTIME_CRATE: &str = "ticket_runtime";

/// What `domain` may name of the runtime (`ticket_runtime::<this>..`): the
/// pure parts. Ids, the clock passed in, and the macros that make typed ids
/// and enums (which are checked in the runtime, where they are written).
pub const DOMAIN_RUNTIME_ALLOWED: &[&str] = &["ids", "clock", "Clock", "text_enum", "typed_id"];

/// What `events` may name of the runtime: the consumer's contract (the
/// handler trait, its error, the transaction it runs in) and the ids.
pub const EVENTS_RUNTIME_ALLOWED: &[&str] = &[
    "EventHandler",
    "ServiceHandler",
    "HandlerError",
    "Tx",
    "ids",
];

/// The runtime's database room: its top-level modules where diesel may be
/// named (the runtime's own tables and queries live there).
pub const RUNTIME_DB_ROOM: &[&str] = &["db"];

/// The runtime's development-only room (broker launcher, development
/// issuer, test support): no production room refers to it.
pub const RUNTIME_DEV_ROOM: &str = "dev";

struct Parsed {
    path: String,
    /// `None`: main.rs, a crate root of its own.
    module: Option<Vec<String>>,
    facts: FileFacts,
}

fn parse_all(files: &[SourceFile], violations: &mut Vec<Violation>) -> Vec<Parsed> {
    let mut parsed = Vec::new();
    for file in files {
        match parse::read(&file.text) {
            Ok(facts) => parsed.push(Parsed {
                path: file.path.clone(),
                module: module_path(&file.path),
                facts,
            }),
            Err(error) => violations.push(Violation {
                file: file.path.clone(),
                line: error.span().start().line,
                rule: Rule::Parse,
                message: format!("not readable as Rust, so not checked: {error}"),
            }),
        }
    }
    parsed
}

/// The crate's module tree, and its files in the tree's order (the file
/// numbers [`CrateMap::file_of`] answers with). main.rs is not in it.
fn crate_map(parsed: &[Parsed]) -> (CrateMap, Vec<&Parsed>) {
    let in_tree: Vec<&Parsed> = parsed.iter().filter(|f| f.module.is_some()).collect();
    let tree: Vec<(Vec<String>, &FileFacts)> = in_tree
        .iter()
        .filter_map(|f| f.module.clone().map(|m| (m, &f.facts)))
        .collect();
    (CrateMap::new(&tree), in_tree)
}

fn room_name(module: &[String]) -> String {
    module
        .first()
        .cloned()
        .unwrap_or_else(|| "lib.rs".to_owned())
}

fn is_io(segments: &[String]) -> bool {
    let Some(name) = segments.first() else {
        return false;
    };
    if name == "std" {
        return segments
            .get(1)
            .is_some_and(|m| STD_IO_MODULES.contains(&m.as_str()));
    }
    IO_CRATES
        .iter()
        .any(|io| name == io || name.starts_with(&format!("{io}_")))
}

fn runtime_part_allowed(segments: &[String], allowed: &[&str]) -> bool {
    segments
        .get(1)
        .is_some_and(|part| allowed.contains(&part.as_str()))
}

/// The rules for one service crate; `files` relative to its `src/`.
pub fn check_service(files: &[SourceFile]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let parsed = parse_all(files, &mut violations);
    let (map, _) = crate_map(&parsed);
    for file in &parsed {
        let room = match &file.module {
            None => "main.rs".to_owned(),
            Some(module) if module.is_empty() => "lib.rs".to_owned(),
            Some(module) => {
                let room = room_name(module);
                if !SERVICE_ROOMS.contains(&room.as_str()) {
                    violations.push(Violation {
                        file: file.path.clone(),
                        line: 1,
                        rule: Rule::UnknownRoom,
                        message: format!(
                            "module `{room}` is none of the rooms ({}), lib.rs or main.rs, so no rule covers it",
                            SERVICE_ROOMS.join(", ")
                        ),
                    });
                }
                room
            }
        };
        let wiring = room == "lib.rs" || room == "main.rs";
        for reference in &file.facts.references {
            let target = match &file.module {
                Some(module) => map.target(module, reference),
                // main.rs names the service through its crate name, so
                // only what it names outside matters.
                None => match (reference.leading_colon, reference.segments.first()) {
                    (false, Some(first))
                        if first == "crate" || first == "self" || first == "super" =>
                    {
                        continue
                    }
                    _ => Target::External(reference.segments.clone()),
                },
            };
            let text = reference.text();
            let mut report = |rule: Rule, message: String| {
                violations.push(Violation {
                    file: file.path.clone(),
                    line: reference.line,
                    rule,
                    message,
                })
            };
            match target {
                Target::Internal(to) => {
                    let to_room = room_name(&to);
                    if wiring || to_room == room {
                        continue;
                    }
                    let allowed = MAY_REFER_TO
                        .iter()
                        .find(|(r, _)| *r == room)
                        .map_or(&[][..], |(_, a)| *a);
                    if !allowed.contains(&to_room.as_str()) {
                        let may = if allowed.is_empty() {
                            "no other room".to_owned()
                        } else {
                            allowed.join(", ")
                        };
                        report(
                            Rule::Rooms,
                            format!(
                                "{room} refers to {to_room} (`{text}`); {room} may refer to {may}"
                            ),
                        );
                    }
                }
                Target::External(segments) => {
                    let Some(name) = segments.first() else {
                        continue;
                    };
                    if SQL_CRATES.contains(&name.as_str()) {
                        let allowed =
                            room == "store" || (room == "lib.rs" && name == "diesel_migrations");
                        if !allowed {
                            report(
                                Rule::SqlInStore,
                                format!("{room} names `{text}`: SQL only in store"),
                            );
                        }
                        continue;
                    }
                    if room == "domain" {
                        if is_io(&segments) {
                            report(
                                Rule::DomainPure,
                                format!("domain names `{text}`, an I/O crate"),
                            );
                        } else if name == RUNTIME_CRATE
                            && !runtime_part_allowed(&segments, DOMAIN_RUNTIME_ALLOWED)
                        {
                            report(
                                Rule::DomainPure,
                                format!(
                                    "domain names `{text}`; of the runtime it may name only {RUNTIME_CRATE}::{{{}}}",
                                    DOMAIN_RUNTIME_ALLOWED.join(", ")
                                ),
                            );
                        }
                    }
                    if room == "events" {
                        if is_io(&segments) {
                            report(
                                Rule::EventsDecodeOnly,
                                format!("events names `{text}`, an I/O crate: events only decode and call app"),
                            );
                        } else if name == RUNTIME_CRATE
                            && !runtime_part_allowed(&segments, EVENTS_RUNTIME_ALLOWED)
                        {
                            report(
                                Rule::EventsDecodeOnly,
                                format!(
                                    "events names `{text}`; of the runtime it may name only {RUNTIME_CRATE}::{{{}}}",
                                    EVENTS_RUNTIME_ALLOWED.join(", ")
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    violations.sort();
    violations.dedup();
    violations
}

/// The rules for the runtime crate; `files` relative to `runtime/src/`.
pub fn check_runtime(files: &[SourceFile]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let parsed = parse_all(files, &mut violations);
    let (map, tree_files) = crate_map(&parsed);
    // Module-level import graph between files: the first reference of
    // each pair, for the message.
    let mut edges: BTreeMap<(usize, usize), (usize, String)> = BTreeMap::new();
    for (from, file) in tree_files.iter().enumerate() {
        let Some(module) = &file.module else {
            continue;
        };
        let room = room_name(module);
        let file_gated = file.facts.gated || map.is_gated(module);
        for reference in &file.facts.references {
            let text = reference.text();
            match map.target(module, reference) {
                Target::External(segments) => {
                    let sql = segments
                        .first()
                        .is_some_and(|name| SQL_CRATES.contains(&name.as_str()));
                    if sql && !RUNTIME_DB_ROOM.contains(&room.as_str()) {
                        violations.push(Violation {
                            file: file.path.clone(),
                            line: reference.line,
                            rule: Rule::SqlInStore,
                            message: format!(
                                "{room} names `{text}`: SQL only in the runtime's db room ({})",
                                RUNTIME_DB_ROOM.join(", ")
                            ),
                        });
                    }
                }
                Target::Internal(to) => {
                    let Some(to_file) = map.file_of(&to) else {
                        continue;
                    };
                    if to_file == from {
                        continue;
                    }
                    let test_only = file_gated || reference.gated;
                    // Test-only code is no dependency of the room it sits
                    // in: a unit test of `column` may use `ids`' types
                    // while `ids` is built with `column`'s macro. A
                    // re-export (`pub use outbox::enqueue` in db/mod.rs)
                    // is none either: paths through it are followed to
                    // the file that defines the item, so a child using its
                    // folder's own items is no circle with the folder.
                    if !test_only && !reference.reexport {
                        edges
                            .entry((from, to_file))
                            .or_insert_with(|| (reference.line, text.clone()));
                    }
                    let to_room = room_name(&to);
                    if to_room == RUNTIME_DEV_ROOM && room != RUNTIME_DEV_ROOM && !test_only {
                        violations.push(Violation {
                            file: file.path.clone(),
                            line: reference.line,
                            rule: Rule::RuntimeDev,
                            message: format!(
                                "{room} refers to the development-only room {RUNTIME_DEV_ROOM} (`{text}`) outside test-only code"
                            ),
                        });
                    }
                }
            }
        }
    }
    let graph: Vec<Vec<usize>> = {
        let mut g = vec![Vec::new(); tree_files.len()];
        for &(a, b) in edges.keys() {
            g[a].push(b);
        }
        g
    };
    let components = strongly_connected(&graph);
    for ((from, to), (line, text)) in &edges {
        let (from, to) = (*from, *to);
        if components[from] != components[to] {
            continue;
        }
        let way_back = shortest_path(&graph, to, from, |n| components[n] == components[from]);
        let circle: Vec<&str> = std::iter::once(from)
            .chain(way_back)
            .map(|n| tree_files[n].path.as_str())
            .collect();
        violations.push(Violation {
            file: tree_files[from].path.clone(),
            line: *line,
            rule: Rule::RuntimeCircle,
            message: format!(
                "refers to {} (`{text}`), closing the circle {}",
                tree_files[to].path,
                circle.join(" -> ")
            ),
        });
    }
    violations.sort();
    violations.dedup();
    violations
}

/// Tarjan's algorithm: each node's component number.
fn strongly_connected(graph: &[Vec<usize>]) -> Vec<usize> {
    struct State<'g> {
        graph: &'g [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        component: Vec<usize>,
        components: usize,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.graph[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                s.component[w] = s.components;
                if w == v {
                    break;
                }
            }
            s.components += 1;
        }
    }
    let n = graph.len();
    let mut s = State {
        graph,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        component: vec![0; n],
        components: 0,
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.component
}

/// The nodes from `from` to `to` (both included), through nodes that
/// satisfy `within`; empty when there is no way.
fn shortest_path(
    graph: &[Vec<usize>],
    from: usize,
    to: usize,
    within: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut previous: HashMap<usize, usize> = HashMap::new();
    let mut seen = BTreeSet::from([from]);
    let mut queue = VecDeque::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to];
            let mut at = to;
            while let Some(&p) = previous.get(&at) {
                path.push(p);
                at = p;
            }
            path.reverse();
            return path;
        }
        for &w in &graph[v] {
            if within(w) && seen.insert(w) {
                previous.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sources: &[(&str, &str)]) -> Vec<SourceFile> {
        sources
            .iter()
            .map(|(path, text)| SourceFile::new(*path, *text))
            .collect()
    }

    /// `(file, line, rule)` of each violation, for comparing.
    fn found(violations: &[Violation]) -> Vec<(String, usize, Rule)> {
        violations
            .iter()
            .map(|v| (v.file.clone(), v.line, v.rule))
            .collect()
    }

    fn service(sources: &[(&str, &str)]) -> Vec<(String, usize, Rule)> {
        found(&check_service(&files(sources)))
    }

    fn runtime(sources: &[(&str, &str)]) -> Vec<(String, usize, Rule)> {
        found(&check_runtime(&files(sources)))
    }

    fn at(file: &str, line: usize, rule: Rule) -> (String, usize, Rule) {
        (file.to_owned(), line, rule)
    }

    const LIB: &str =
        "pub mod api;\npub mod app;\npub mod domain;\npub mod events;\npub mod store;\n";

    #[test]
    fn api_importing_store_is_reported_and_importing_app_is_not() {
        let planted = service(&[
            ("lib.rs", LIB),
            (
                "api/mod.rs",
                "use crate::app::Catalog;\nuse crate::store::Row;\n",
            ),
        ]);
        assert_eq!(planted, [at("api/mod.rs", 2, Rule::Rooms)]);

        let clean = service(&[
            ("lib.rs", LIB),
            (
                "api/mod.rs",
                "use crate::app::Catalog;\nuse crate::domain::Status;\n",
            ),
        ]);
        assert_eq!(clean, []);
    }

    #[test]
    fn a_room_is_its_module_path_file_or_folder() {
        let as_file = service(&[("lib.rs", LIB), ("api.rs", "use crate::store::Row;\n")]);
        assert_eq!(as_file, [at("api.rs", 1, Rule::Rooms)]);
        let deeper = service(&[
            ("lib.rs", LIB),
            ("api/admin/pages.rs", "use crate::store::Row;\n"),
        ]);
        assert_eq!(deeper, [at("api/admin/pages.rs", 1, Rule::Rooms)]);
    }

    #[test]
    fn every_path_counts_not_only_use_lines() {
        let source = [
            "fn rows() -> Vec<crate::store::Row> {",    // 1: a type
            "    crate::store::load()",                 // 2: an expression
            "}",                                        //
            "fn made() -> Vec<u8> {",                   //
            "    vec![crate::store::Row::default().0]", // 5: a macro body
            "}",                                        //
            "#[derive(crate::store::Derived)]",         // 7: an attribute
            "struct Shown;",                            //
        ]
        .join("\n");
        let violations = service(&[("lib.rs", LIB), ("api/mod.rs", &source)]);
        let lines: Vec<usize> = violations.iter().map(|(_, line, _)| *line).collect();
        assert_eq!(lines, [1, 2, 5, 7]);
    }

    #[test]
    fn super_paths_are_resolved_from_the_module_they_are_in() {
        let store = "mod schema;\nuse super::app::Catalog;\n";
        let schema = "use super::Row;\nuse super::super::app::Catalog;\n";
        let violations = service(&[
            ("lib.rs", LIB),
            ("store/mod.rs", store),
            ("store/schema.rs", schema),
        ]);
        assert_eq!(
            violations,
            [
                at("store/mod.rs", 2, Rule::Rooms),
                at("store/schema.rs", 2, Rule::Rooms),
            ]
        );
    }

    #[test]
    fn inline_test_modules_resolve_super_from_themselves() {
        let api = "mod tests {\n    use super::super::store::Row;\n    use super::Body;\n}\npub struct Body;\n";
        assert_eq!(
            service(&[("lib.rs", LIB), ("api/mod.rs", api)]),
            [at("api/mod.rs", 2, Rule::Rooms)]
        );
    }

    #[test]
    fn a_name_imported_once_counts_wherever_it_is_used() {
        let events = "use crate::domain::State;\nfn f() { g(State::Held) }\n";
        assert_eq!(
            service(&[("lib.rs", LIB), ("events/mod.rs", events)]),
            [
                at("events/mod.rs", 1, Rule::Rooms),
                at("events/mod.rs", 2, Rule::Rooms),
            ]
        );
    }

    #[test]
    fn re_exports_are_followed_to_the_room_that_holds_the_item() {
        let lib = format!("{LIB}pub use store::Row;\npub struct HoldPolicy;\n");
        let api = "use crate::Row;\n";
        let app = "use crate::HoldPolicy;\n";
        assert_eq!(
            service(&[("lib.rs", &lib), ("api/mod.rs", api), ("app/mod.rs", app)]),
            [
                at("api/mod.rs", 1, Rule::Rooms),
                at("app/mod.rs", 1, Rule::Rooms),
            ]
        );
    }

    #[test]
    fn lower_rooms_never_refer_to_higher_ones() {
        let violations = service(&[
            ("lib.rs", LIB),
            ("domain/mod.rs", "use crate::store::Row;\n"),
            (
                "store/mod.rs",
                "use crate::app::Catalog;\nuse crate::domain::Status;\n",
            ),
            (
                "app/mod.rs",
                "use crate::api::Body;\nuse crate::store::Row;\n",
            ),
            ("api/mod.rs", "use crate::events::Handler;\n"),
        ]);
        assert_eq!(
            violations,
            [
                at("api/mod.rs", 1, Rule::Rooms),
                at("app/mod.rs", 1, Rule::Rooms),
                at("domain/mod.rs", 1, Rule::Rooms),
                at("store/mod.rs", 1, Rule::Rooms),
            ]
        );
    }

    #[test]
    fn events_only_decode_and_call_app() {
        let planted = [
            "use crate::store::Row;",                // 1
            "use crate::api::Body;",                 // 2
            "use crate::domain::State;",             // 3
            "use tokio::sync::Notify;",              // 4
            "use ticket_runtime::waiters::Waiters;", // 5
            "fn f(tx: &mut Tx<'_>) { ticket_runtime::pass::record_ended(tx.conn(), 1) }", // 6
        ]
        .join("\n");
        assert_eq!(
            service(&[("lib.rs", LIB), ("events/mod.rs", &planted)]),
            [
                at("events/mod.rs", 1, Rule::Rooms),
                at("events/mod.rs", 2, Rule::Rooms),
                at("events/mod.rs", 3, Rule::Rooms),
                at("events/mod.rs", 4, Rule::EventsDecodeOnly),
                at("events/mod.rs", 5, Rule::EventsDecodeOnly),
                at("events/mod.rs", 6, Rule::EventsDecodeOnly),
            ]
        );
        let clean = "use crate::app::saga;\nuse shared_events::{Envelope, Event};\nuse ticket_runtime::{EventHandler, HandlerError, Tx};\nuse ticket_runtime::ids::ReservationId;\n";
        assert_eq!(service(&[("lib.rs", LIB), ("events/mod.rs", clean)]), []);
    }

    #[test]
    fn domain_names_no_io_crate_and_only_the_pure_runtime() {
        let planted = [
            "use tokio::time::sleep;",               // 1
            "use actix_web::web;",                   // 2
            "use ticket_runtime::Db;",               // 3
            "fn f() { std::fs::read(\"x\"); }",      // 4
            "fn g() -> reqwest::Client { todo!() }", // 5
            "use diesel::prelude::*;",               // 6: SQL, reported once
        ]
        .join("\n");
        assert_eq!(
            service(&[("lib.rs", LIB), ("domain/mod.rs", &planted)]),
            [
                at("domain/mod.rs", 1, Rule::DomainPure),
                at("domain/mod.rs", 2, Rule::DomainPure),
                at("domain/mod.rs", 3, Rule::DomainPure),
                at("domain/mod.rs", 4, Rule::DomainPure),
                at("domain/mod.rs", 5, Rule::DomainPure),
                at("domain/mod.rs", 6, Rule::SqlInStore),
            ]
        );
        let clean = [
            "use chrono::{DateTime, Utc};",
            "use serde::Deserialize;",
            "use std::time::Duration;",
            "use ticket_runtime::ids::{PaymentId, UserId};",
            "ticket_runtime::text_enum! { pub enum Status { Held = \"held\" } }",
        ]
        .join("\n");
        assert_eq!(service(&[("lib.rs", LIB), ("domain/mod.rs", &clean)]), []);
    }

    #[test]
    fn sql_only_in_store_and_migrations_in_lib() {
        let app = "impl From<diesel::result::Error> for E { fn from(_: diesel::result::Error) -> E { E } }\n";
        let api = "#[diesel(table_name = rows)]\nstruct Row;\nfn f() { ticket_runtime::on_backend!(c, |c| diesel::update(t)) }\n";
        let lib = format!("{LIB}const M: u8 = diesel_migrations::embed_migrations!(\"m\");\nuse diesel::Connection;\n");
        let main = "fn main() { diesel::select(1); crate::x(); }\n";
        let store = "use diesel::prelude::*;\nmod schema;\nfn f() { diesel::insert_into(t) }\n";
        let schema = "diesel::table! { rows (id) { id -> Text } }\n";
        assert_eq!(
            service(&[
                ("lib.rs", &lib),
                ("main.rs", main),
                ("app/mod.rs", app),
                ("api/mod.rs", api),
                ("store/mod.rs", store),
                ("store/schema.rs", schema),
            ]),
            [
                at("api/mod.rs", 1, Rule::SqlInStore),
                at("api/mod.rs", 3, Rule::SqlInStore),
                at("app/mod.rs", 1, Rule::SqlInStore),
                at("lib.rs", 7, Rule::SqlInStore),
                at("main.rs", 1, Rule::SqlInStore),
            ]
        );
    }

    #[test]
    fn a_file_outside_the_rooms_and_a_file_that_does_not_parse_are_reported() {
        assert_eq!(
            service(&[("lib.rs", LIB), ("config.rs", "pub struct C;\n")]),
            [at("config.rs", 1, Rule::UnknownRoom)]
        );
        assert_eq!(
            service(&[("lib.rs", LIB), ("api/mod.rs", "\nfn broken( {\n")]),
            [at("api/mod.rs", 2, Rule::Parse)]
        );
    }

    const RUNTIME_LIB: &str = "pub mod a;\npub mod b;\n";

    #[test]
    fn runtime_files_importing_each_other_are_a_circle() {
        let planted = runtime(&[
            ("lib.rs", RUNTIME_LIB),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "\nuse crate::a::A;\npub struct B;\n"),
        ]);
        assert_eq!(
            planted,
            [
                at("a.rs", 1, Rule::RuntimeCircle),
                at("b.rs", 2, Rule::RuntimeCircle)
            ]
        );
        let clean = runtime(&[
            ("lib.rs", RUNTIME_LIB),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "pub struct B;\n"),
        ]);
        assert_eq!(clean, []);
    }

    #[test]
    fn a_circle_through_a_re_export_and_round_three_files_is_found() {
        let lib = "pub mod a;\npub mod b;\npub mod c;\npub use c::C;\n";
        let violations = check_runtime(&files(&[
            ("lib.rs", lib),
            ("a.rs", "use crate::C;\npub struct A;\n"),
            ("b.rs", "use super::a::A;\npub struct B;\n"),
            ("c.rs", "pub struct C(crate::b::B);\n"),
        ]));
        assert_eq!(
            found(&violations),
            [
                at("a.rs", 1, Rule::RuntimeCircle),
                at("b.rs", 1, Rule::RuntimeCircle),
                at("c.rs", 1, Rule::RuntimeCircle),
            ]
        );
        assert!(
            violations[0]
                .message
                .contains("a.rs -> c.rs -> b.rs -> a.rs"),
            "{}",
            violations[0]
        );
    }

    #[test]
    fn a_folder_re_exporting_its_files_is_no_circle() {
        // Without following `pub use`, pool.rs -> mod.rs -> pool.rs.
        let violations = runtime(&[
            ("lib.rs", "pub mod db;\n"),
            (
                "db/mod.rs",
                "mod pool;\nmod tx;\npub use pool::Db;\npub use tx::Tx;\n",
            ),
            ("db/pool.rs", "use super::Tx;\npub struct Db(Tx);\n"),
            ("db/tx.rs", "pub struct Tx;\n"),
        ]);
        assert_eq!(violations, []);
    }

    #[test]
    fn a_folder_re_exporting_a_child_that_uses_the_folder_is_no_circle() {
        let db = "mod outbox;\npub use outbox::enqueue;\npub struct Db;\n";
        let clean = runtime(&[
            ("lib.rs", "pub mod db;\n"),
            ("db/mod.rs", db),
            ("db/outbox.rs", "pub fn enqueue(_: &super::Db) {}\n"),
        ]);
        assert_eq!(clean, []);
        // The folder's own code calling the child is a circle.
        let calling = format!("{db}fn publish(db: &Db) {{ outbox::enqueue(db) }}\n");
        let planted = runtime(&[
            ("lib.rs", "pub mod db;\n"),
            ("db/mod.rs", &calling),
            ("db/outbox.rs", "pub fn enqueue(_: &super::Db) {}\n"),
        ]);
        assert_eq!(
            planted,
            [
                at("db/mod.rs", 4, Rule::RuntimeCircle),
                at("db/outbox.rs", 1, Rule::RuntimeCircle),
            ]
        );
    }

    #[test]
    fn an_exported_macro_belongs_to_the_file_that_defines_it() {
        let column = "#[macro_export]\nmacro_rules! typed_id { ($n:ident) => { pub struct $n; } }\npub fn f(_: crate::ids::Id) {}\n";
        let violations = runtime(&[
            ("lib.rs", "pub mod column;\npub mod ids;\n"),
            ("column.rs", column),
            ("ids.rs", "crate::typed_id!(Id);\n"),
        ]);
        assert_eq!(
            violations,
            [
                at("column.rs", 3, Rule::RuntimeCircle),
                at("ids.rs", 1, Rule::RuntimeCircle),
            ]
        );
    }

    #[test]
    fn test_only_code_makes_no_circle() {
        let violations = runtime(&[
            ("lib.rs", RUNTIME_LIB),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            (
                "b.rs",
                "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
            ),
        ]);
        assert_eq!(violations, []);
    }

    #[test]
    fn production_rooms_never_refer_to_the_dev_room() {
        let lib = "pub mod dev;\npub mod http;\npub mod ops;\n#[cfg(feature = \"testkit\")]\npub mod testkit;\n";
        let http = [
            "use crate::dev::issuer::DevIssuer;",            // 1
            "#[cfg(feature = \"testkit\")]",                 //
            "use crate::dev::broker::Broker;",               // 3: gated
            "#[cfg(not(test))]",                             //
            "use crate::dev::keys::generate;",               // 5
            "#[cfg(any(test, feature = \"testkit\"))]",      //
            "fn helper() { crate::dev::keys::generate(); }", // 7: gated
        ]
        .join("\n");
        let violations = runtime(&[
            ("lib.rs", lib),
            ("http.rs", &http),
            (
                "dev/mod.rs",
                "pub mod issuer;\npub mod broker;\npub mod keys;\nuse crate::ops::Settings;\n",
            ),
            ("dev/issuer.rs", "pub struct DevIssuer;\n"),
            ("ops.rs", "pub struct Settings;\n"),
            ("testkit.rs", "use crate::dev::broker::Broker;\n"),
        ]);
        assert_eq!(
            violations,
            [
                at("http.rs", 1, Rule::RuntimeDev),
                at("http.rs", 5, Rule::RuntimeDev),
            ]
        );
        let re_export = runtime(&[
            ("lib.rs", "pub mod dev;\npub use dev::DevIssuer;\n"),
            ("dev.rs", "pub struct DevIssuer;\n"),
        ]);
        assert_eq!(re_export, [at("lib.rs", 2, Rule::RuntimeDev)]);
    }

    #[test]
    fn runtime_sql_only_in_the_db_room() {
        let violations = runtime(&[
            ("lib.rs", "pub mod db;\npub mod outbox;\n"),
            ("outbox.rs", "use diesel::prelude::*;\n"),
            ("db/mod.rs", "pub mod outbox;\nuse diesel::prelude::*;\n"),
            ("db/outbox.rs", "fn f() { diesel::insert_into(t) }\n"),
        ]);
        assert_eq!(violations, [at("outbox.rs", 1, Rule::SqlInStore)]);
    }
}
