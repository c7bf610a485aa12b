//! A crate's module tree built from its files, and where a path named in
//! one of them lands: in which module (and so which file and room), or
//! outside the crate (and then in which crate).

use std::collections::{HashMap, HashSet};

use crate::parse::{FileFacts, Reference};

/// Where a path points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Into this crate: the module that holds the named item, from the root.
    Internal(Vec<String>),
    /// Another crate: the path from its name on.
    External(Vec<String>),
}

#[derive(Debug, Default)]
struct Module {
    file: usize,
    children: HashSet<String>,
    items: HashSet<String>,
    /// Imports as written; made absolute on use, from this module.
    imports: HashMap<String, (Vec<String>, bool)>,
    globs: Vec<(Vec<String>, bool)>,
}

pub(crate) struct CrateMap {
    modules: HashMap<Vec<String>, Module>,
    /// `#[macro_export]` macros (named `crate::m!`) and their module.
    macros: HashMap<String, Vec<String>>,
    /// Modules whose declaration compiles them only for tests.
    gated_decls: HashSet<Vec<String>>,
}

/// The module a file holds: `lib.rs` is the root, `a/b.rs` and
/// `a/b/mod.rs` are both `a::b`. `None` for `main.rs` (a crate of its own).
pub(crate) fn module_path(path: &str) -> Option<Vec<String>> {
    let trimmed = path.strip_suffix(".rs")?;
    if trimmed == "main" {
        return None;
    }
    if trimmed == "lib" {
        return Some(Vec::new());
    }
    let mut segments: Vec<String> = trimmed.split('/').map(str::to_owned).collect();
    if segments.last().map(String::as_str) == Some("mod") {
        segments.pop();
    }
    Some(segments)
}

impl CrateMap {
    /// `files`: each file's module path and what was read from it.
    pub fn new(files: &[(Vec<String>, &FileFacts)]) -> CrateMap {
        let mut map = CrateMap {
            modules: HashMap::new(),
            macros: HashMap::new(),
            gated_decls: HashSet::new(),
        };
        for (index, (path, facts)) in files.iter().enumerate() {
            for facts_of in &facts.modules {
                let mut module_path = path.clone();
                module_path.extend(facts_of.scope.iter().cloned());
                let mut module = Module {
                    file: index,
                    items: facts_of.items.clone(),
                    ..Module::default()
                };
                for (child, gated) in &facts_of.children {
                    module.children.insert(child.clone());
                    if *gated {
                        let mut child_path = module_path.clone();
                        child_path.push(child.clone());
                        map.gated_decls.insert(child_path);
                    }
                }
                for import in &facts_of.imports {
                    let entry = (import.segments.clone(), import.leading_colon);
                    if import.name == "*" {
                        module.globs.push(entry);
                    } else {
                        module.imports.entry(import.name.clone()).or_insert(entry);
                    }
                }
                for name in &facts_of.exported_macros {
                    map.macros.insert(name.clone(), module_path.clone());
                }
                map.modules.insert(module_path, module);
            }
        }
        map
    }

    /// The file (index into the list given to [`CrateMap::new`]) holding
    /// `module`, or the nearest enclosing module that has one.
    pub fn file_of(&self, module: &[String]) -> Option<usize> {
        (0..=module.len())
            .rev()
            .find_map(|n| self.modules.get(&module[..n]).map(|m| m.file))
    }

    /// Whether `module` is only compiled for tests (its declaration, or
    /// an enclosing one's, is `#[cfg(test)]` or `testkit`).
    pub fn is_gated(&self, module: &[String]) -> bool {
        (1..=module.len()).any(|n| self.gated_decls.contains(&module[..n]))
    }

    /// Where `reference`, named in the file of module `file_module`, points.
    pub fn target(&self, file_module: &[String], reference: &Reference) -> Target {
        if reference.attribute {
            return Target::External(reference.segments.clone());
        }
        let mut scope = file_module.to_vec();
        scope.extend(reference.scope.iter().cloned());
        match self.absolute(&scope, &reference.segments, reference.leading_colon, true) {
            Target::Internal(path) => self.locate(&path, 0),
            external => external,
        }
    }

    /// The path from the crate root, or from the other crate's name.
    fn absolute(
        &self,
        scope: &[String],
        segments: &[String],
        leading_colon: bool,
        follow_imports: bool,
    ) -> Target {
        let Some(first) = segments.first() else {
            return Target::Internal(scope.to_vec());
        };
        if leading_colon {
            return Target::External(segments.to_vec());
        }
        match first.as_str() {
            "crate" => return Target::Internal(segments[1..].to_vec()),
            "self" => return Target::Internal(join(scope, &segments[1..])),
            "super" => {
                let mut base = scope.to_vec();
                let mut rest = segments;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                // `super::super::x` with `self` after it is still `x`.
                if rest.first().map(String::as_str) == Some("self") {
                    rest = &rest[1..];
                }
                return Target::Internal(join(&base, rest));
            }
            _ => {}
        }
        let Some(module) = self.modules.get(scope) else {
            return Target::External(segments.to_vec());
        };
        if module.children.contains(first) || module.items.contains(first) {
            return Target::Internal(join(scope, segments));
        }
        if follow_imports {
            if let Some((imported, leading)) = module.imports.get(first) {
                return match self.absolute(scope, imported, *leading, false) {
                    Target::Internal(path) => Target::Internal(join(&path, &segments[1..])),
                    Target::External(path) => Target::External(join(&path, &segments[1..])),
                };
            }
            for (glob, leading) in &module.globs {
                if let Target::Internal(base) = self.absolute(scope, glob, *leading, false) {
                    if self.declares(&base, first) {
                        return Target::Internal(join(&base, segments));
                    }
                }
            }
        }
        Target::External(segments.to_vec())
    }

    fn declares(&self, module: &[String], name: &str) -> bool {
        self.modules.get(module).is_some_and(|m| {
            m.children.contains(name) || m.items.contains(name) || m.imports.contains_key(name)
        })
    }

    /// Walks an absolute path down the module tree, through re-exports
    /// (`pub use db::Db` at the root sends `crate::Db` to `db`), to the
    /// module that holds what it names. A module not in the map (a file
    /// not given) keeps the rest of the path, so its room still shows.
    fn locate(&self, path: &[String], depth: u8) -> Target {
        let mut at: Vec<String> = Vec::new();
        for (i, segment) in path.iter().enumerate() {
            if segment == "*" {
                break;
            }
            let Some(module) = self.modules.get(&at) else {
                return Target::Internal(join(&at, &path[i..]));
            };
            if module.children.contains(segment) {
                at.push(segment.clone());
                continue;
            }
            if module.items.contains(segment) {
                return Target::Internal(at);
            }
            if at.is_empty() {
                if let Some(home) = self.macros.get(segment) {
                    return Target::Internal(home.clone());
                }
            }
            // Re-exports: a bounded depth, as `use` cycles are possible in
            // code that does not compile yet.
            if depth < 8 {
                if let Some((imported, leading)) = module.imports.get(segment) {
                    return match self.absolute(&at, imported, *leading, false) {
                        Target::Internal(to) => self.locate(&join(&to, &path[i + 1..]), depth + 1),
                        // An outside item re-exported here.
                        Target::External(to) => Target::External(join(&to, &path[i + 1..])),
                    };
                }
                for (glob, leading) in &module.globs {
                    if let Target::Internal(base) = self.absolute(&at, glob, *leading, false) {
                        if self.declares(&base, segment) {
                            return self.locate(&join(&base, &path[i..]), depth + 1);
                        }
                    }
                }
            }
            return Target::Internal(at);
        }
        Target::Internal(at)
    }
}

fn join(base: &[String], rest: &[String]) -> Vec<String> {
    base.iter().chain(rest).cloned().collect()
}
