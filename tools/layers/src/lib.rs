//! The layer rules of docs/architecture.md ("Layer rules"), checked by
//! reading the source: every service crate (`services/*/src`) and the
//! runtime (`runtime/src`). `cargo test -p layers` runs them over the real
//! tree (`tests/real_tree.rs`) and fails listing each violation as
//! `file:line: [rule] what`.
//!
//! The rules are pure functions over `(file path, source text)`:
//! [`check_service`] and [`check_runtime`] take a crate's files, paths
//! relative to its `src/`. A file's room is its module path, not its
//! folder: `src/api.rs` and `src/api/**` are both room `api`.
//!
//! **What is read.** Each file is parsed with `syn`, and every path counts,
//! not only `use` lines: `use` trees, paths in expressions, types, patterns
//! and trait bounds, attribute paths (`#[diesel(..)]`), macro paths
//! (`diesel::table!`), and `a::b` runs inside the tokens of macro bodies
//! and attribute arguments (`on_backend!(conn, |c| diesel::insert_into(..))`).
//! Paths are resolved the way rustc would for the cases the code uses:
//! `crate::`, `super::` (also from inline modules such as `mod tests`),
//! `self::`, child modules, names imported by `use` (including `use
//! super::*`), re-exports (`pub use db::Db` sends `crate::Db` to `db`), and
//! `#[macro_export]` macros (`crate::on_backend!` is `db`'s).
//!
//! **What it cannot see, and why that is acceptable.**
//! - What macros expand to: `text_enum!` writes diesel impls into `domain`,
//!   but `domain` only names `ticket_runtime::text_enum`, which the rules
//!   allow by name. A macro is checked where it is defined.
//! - Tokens in macro bodies that are not `a::b` runs (a bare `insert_into`
//!   after `use diesel::prelude::*`): the `use` that brought the name in is
//!   itself checked, so the dependency is still reported once.
//! - Types of values: `tx.conn()` hands events a diesel connection without
//!   naming diesel. The rules are about what a room names; what a value can
//!   do is the compiler's business, and `events` may name only the
//!   consumer's types (`Tx`), so a new I/O entry point must be named.
//! - `#[path = ..]` on `mod`, `include!`, and `cfg` beyond test-only code:
//!   none are used in these crates.
//! - Re-exports across crates (`ticket_runtime::Db` is not followed into
//!   the runtime); the runtime's rooms are checked in the runtime itself.

mod parse;
mod resolve;
mod rules;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use rules::{
    check_runtime, check_service, DOMAIN_RUNTIME_ALLOWED, EVENTS_RUNTIME_ALLOWED, IO_CRATES,
    RUNTIME_CRATE, RUNTIME_DB_ROOM, RUNTIME_DEV_ROOM, SERVICE_ROOMS, SQL_CRATES,
};

/// One file of a crate: its path relative to the crate's `src/`, with `/`.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// The file is not Rust that `syn` can read.
    Parse,
    /// A service file outside the five rooms, lib.rs and main.rs.
    UnknownRoom,
    /// A room refers to a room it may not.
    Rooms,
    /// `domain` names an I/O crate or an I/O part of the runtime.
    DomainPure,
    /// `events` names something beyond `app`, the events and the consumer.
    EventsDecodeOnly,
    /// diesel outside `store` (services) or the db room (runtime).
    SqlInStore,
    /// Runtime files that import each other, directly or round a loop.
    RuntimeCircle,
    /// A production runtime room refers to the development-only room.
    RuntimeDev,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Parse => "parse",
            Rule::UnknownRoom => "unknown-room",
            Rule::Rooms => "rooms",
            Rule::DomainPure => "domain-pure",
            Rule::EventsDecodeOnly => "events-decode-only",
            Rule::SqlInStore => "sql-in-store",
            Rule::RuntimeCircle => "runtime-circle",
            Rule::RuntimeDev => "runtime-dev",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    /// As given (relative to `src/`), or prefixed by [`check_workspace`].
    pub file: String,
    pub line: usize,
    pub rule: Rule,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file,
            self.line,
            self.rule.name(),
            self.message
        )
    }
}

/// What [`check_workspace`] read, so a caller can tell an empty list of
/// violations from a walk that found nothing.
#[derive(Debug, Default)]
pub struct Report {
    /// Each crate's `src/` (relative to the workspace) and its file count.
    pub crates: Vec<(String, usize)>,
    pub violations: Vec<Violation>,
}

/// Checks every `services/*/src` and `runtime/src` under `root`.
pub fn check_workspace(root: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    let mut services: Vec<PathBuf> = std::fs::read_dir(root.join("services"))?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    services.sort();
    for src in services {
        let files = read_src(&src)?;
        let prefix = relative(root, &src);
        report.crates.push((prefix.clone(), files.len()));
        report
            .violations
            .extend(prefixed(&prefix, check_service(&files)));
    }
    let runtime = root.join("runtime").join("src");
    let files = read_src(&runtime)?;
    let prefix = relative(root, &runtime);
    report.crates.push((prefix.clone(), files.len()));
    report
        .violations
        .extend(prefixed(&prefix, check_runtime(&files)));
    Ok(report)
}

/// Every `.rs` file under `src`, paths relative to it, sorted.
pub fn read_src(src: &Path) -> io::Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)?;
                files.push(SourceFile::new(relative(src, &path), text));
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn prefixed(prefix: &str, violations: Vec<Violation>) -> Vec<Violation> {
    violations
        .into_iter()
        .map(|v| Violation {
            file: format!("{prefix}/{}", v.file),
            ..v
        })
        .collect()
}
