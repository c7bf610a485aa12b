//! One file read with `syn`: every path it names (with its line), and what
//! each of its modules declares (child modules, items, imports), which is
//! what [`crate::resolve`] needs to follow a path to the file it lands in.

use std::collections::HashSet;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Attribute, ImplItem, Item, Meta, Token, UseTree};

/// A path named in the source, as written (`$crate` read as `crate`).
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub segments: Vec<String>,
    pub leading_colon: bool,
    pub line: usize,
    /// Inline modules around it within the file (`["tests"]`), outermost first.
    pub scope: Vec<String>,
    /// Only compiled for tests: under `#[cfg(test)]` or the `testkit` feature.
    pub gated: bool,
    /// In a `pub use` (any `pub(..)` too): a re-export, passed through
    /// rather than used by the file's own code.
    pub reexport: bool,
    /// An attribute's own name (`#[diesel(..)]`, `#[schema(..)]`): a crate
    /// or a derive's helper, never a module of this crate.
    pub attribute: bool,
}

impl Reference {
    pub fn text(&self) -> String {
        let joined = self.segments.join("::");
        if self.leading_colon {
            format!("::{joined}")
        } else {
            joined
        }
    }
}

/// A `use` as an item of its module: `name` is what it brings into scope
/// (`*` for a glob), `segments` where it points, as written.
#[derive(Debug, Clone)]
pub(crate) struct Import {
    pub name: String,
    pub segments: Vec<String>,
    pub leading_colon: bool,
}

/// What one module (the file's own, or an inline `mod x { .. }`) declares.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModuleFacts {
    pub scope: Vec<String>,
    /// Child modules: name, and whether the declaration is test-gated.
    pub children: Vec<(String, bool)>,
    pub items: HashSet<String>,
    pub imports: Vec<Import>,
    /// `#[macro_export]` macros: callable as `crate::name!` from anywhere.
    pub exported_macros: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FileFacts {
    pub references: Vec<Reference>,
    pub modules: Vec<ModuleFacts>,
    /// `#![cfg(test)]` (or testkit) on the whole file.
    pub gated: bool,
}

pub(crate) fn read(source: &str) -> syn::Result<FileFacts> {
    let file = syn::parse_file(source)?;
    let mut modules = Vec::new();
    collect_module(&file.items, Vec::new(), &mut modules);
    let gated = is_test_gated(&file.attrs);
    let mut collector = Collector {
        references: Vec::new(),
        scope: Vec::new(),
        gated_depth: usize::from(gated),
    };
    collector.visit_file(&file);
    Ok(FileFacts {
        references: collector.references,
        modules,
        gated,
    })
}

fn collect_module(items: &[Item], scope: Vec<String>, out: &mut Vec<ModuleFacts>) {
    let mut facts = ModuleFacts {
        scope: scope.clone(),
        ..ModuleFacts::default()
    };
    for item in items {
        match item {
            Item::Mod(m) => {
                let name = m.ident.to_string();
                facts.children.push((name.clone(), is_test_gated(&m.attrs)));
                if let Some((_, inner)) = &m.content {
                    let mut child = scope.clone();
                    child.push(name);
                    collect_module(inner, child, out);
                }
            }
            Item::Use(u) => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, Vec::new(), &mut leaves);
                for leaf in leaves {
                    let name = match &leaf.alias {
                        Some(alias) => alias.clone(),
                        None => continue,
                    };
                    facts.imports.push(Import {
                        name,
                        segments: leaf.segments,
                        leading_colon: u.leading_colon.is_some(),
                    });
                }
            }
            Item::Macro(m) => {
                if let Some(ident) = &m.ident {
                    let exported = m.attrs.iter().any(|a| a.path().is_ident("macro_export"));
                    if exported {
                        facts.exported_macros.push(ident.to_string());
                    }
                }
            }
            other => {
                if let Some(name) = item_name(other) {
                    facts.items.insert(name);
                }
            }
        }
    }
    out.push(facts);
}

fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

struct UseLeaf {
    segments: Vec<String>,
    /// The name the leaf brings into scope; `*` for a glob; `None` for `_`.
    alias: Option<String>,
    line: usize,
}

fn use_leaves(tree: &UseTree, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    match tree {
        UseTree::Path(p) => {
            let mut next = prefix;
            next.push(p.ident.to_string());
            use_leaves(&p.tree, next, out);
        }
        UseTree::Name(n) => {
            let name = n.ident.to_string();
            let line = n.ident.span().start().line;
            if name == "self" {
                // `use a::b::{self}` names module `b`.
                let alias = prefix.last().cloned();
                out.push(UseLeaf {
                    segments: prefix,
                    alias,
                    line,
                });
            } else {
                let mut segments = prefix;
                segments.push(name.clone());
                out.push(UseLeaf {
                    segments,
                    alias: Some(name),
                    line,
                });
            }
        }
        UseTree::Rename(r) => {
            let mut segments = prefix;
            let name = r.ident.to_string();
            if name != "self" {
                segments.push(name);
            }
            let alias = r.rename.to_string();
            out.push(UseLeaf {
                segments,
                alias: (alias != "_").then_some(alias),
                line: r.ident.span().start().line,
            });
        }
        UseTree::Glob(g) => out.push(UseLeaf {
            segments: prefix,
            alias: Some("*".to_owned()),
            line: g.star_token.span.start().line,
        }),
        UseTree::Group(g) => {
            for inner in &g.items {
                use_leaves(inner, prefix.clone(), out);
            }
        }
    }
}

/// Whether `#[cfg(..)]` among `attrs` compiles the item only for tests:
/// `test`, `feature = "testkit"`, or an `all`/`any` that amounts to one.
pub(crate) fn is_test_gated(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .filter_map(|a| a.parse_args::<Meta>().ok())
        .any(|meta| gated_predicate(&meta))
}

fn gated_predicate(meta: &Meta) -> bool {
    match meta {
        Meta::Path(p) => p.is_ident("test"),
        Meta::NameValue(nv) => {
            nv.path.is_ident("feature")
                && matches!(&nv.value, syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) if s.value() == "testkit")
        }
        Meta::List(list) => {
            let Ok(inner) = list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
            else {
                return false;
            };
            if list.path.is_ident("all") {
                inner.iter().any(gated_predicate)
            } else if list.path.is_ident("any") {
                !inner.is_empty() && inner.iter().all(gated_predicate)
            } else {
                // `not(..)` and anything else: compiled outside tests too.
                false
            }
        }
    }
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn impl_item_attrs(item: &ImplItem) -> &[Attribute] {
    match item {
        ImplItem::Const(i) => &i.attrs,
        ImplItem::Fn(i) => &i.attrs,
        ImplItem::Type(i) => &i.attrs,
        ImplItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

struct Collector {
    references: Vec<Reference>,
    scope: Vec<String>,
    gated_depth: usize,
}

impl Collector {
    fn record(&mut self, segments: Vec<String>, leading_colon: bool, line: usize) {
        self.record_as(segments, leading_colon, line, false);
    }

    fn record_as(
        &mut self,
        segments: Vec<String>,
        leading_colon: bool,
        line: usize,
        attribute: bool,
    ) {
        if segments.is_empty() {
            return;
        }
        self.references.push(Reference {
            segments,
            leading_colon,
            line,
            scope: self.scope.clone(),
            gated: self.gated_depth > 0,
            reexport: false,
            attribute,
        });
    }

    fn record_path(&mut self, path: &syn::Path, attribute: bool) {
        let single = path.segments.len() < 2 && path.leading_colon.is_none();
        if single && !attribute {
            // `x`, `Foo`, `self`: a local name, or one brought in by a `use`
            // that is itself checked.
            return;
        }
        let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let line = path
            .segments
            .first()
            .map_or(0, |s| s.ident.span().start().line);
        self.record_as(
            segments,
            path.leading_colon.is_some(),
            line,
            single && attribute,
        );
    }

    /// Paths in tokens syn leaves unparsed (macro bodies, attribute
    /// arguments): runs of `ident :: ident`, optionally after a leading `::`.
    fn scan_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            if let TokenTree::Group(g) = &trees[i] {
                self.scan_tokens(g.stream());
                i += 1;
                continue;
            }
            let leading = is_path_sep(&trees, i);
            let start = if leading { i + 2 } else { i };
            let Some(TokenTree::Ident(first)) = trees.get(start) else {
                i += 1;
                continue;
            };
            let line = first.span().start().line;
            let mut segments = vec![first.to_string()];
            let mut j = start + 1;
            while is_path_sep(&trees, j) {
                match trees.get(j + 2) {
                    Some(TokenTree::Ident(next)) => {
                        segments.push(next.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            if segments.len() >= 2 || leading {
                self.record(segments, leading, line);
            }
            i = j;
        }
    }
}

fn is_path_sep(trees: &[TokenTree], i: usize) -> bool {
    matches!(
        (trees.get(i), trees.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast Item) {
        let gated = is_test_gated(item_attrs(item));
        self.gated_depth += usize::from(gated);
        visit::visit_item(self, item);
        self.gated_depth -= usize::from(gated);
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let gated = is_test_gated(impl_item_attrs(item));
        self.gated_depth += usize::from(gated);
        visit::visit_impl_item(self, item);
        self.gated_depth -= usize::from(gated);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.scope.push(m.ident.to_string());
        visit::visit_item_mod(self, m);
        self.scope.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut leaves = Vec::new();
        use_leaves(&u.tree, Vec::new(), &mut leaves);
        let reexport = !matches!(u.vis, syn::Visibility::Inherited);
        for leaf in leaves {
            self.record(leaf.segments, u.leading_colon.is_some(), leaf.line);
            if let Some(last) = self.references.last_mut() {
                last.reexport = reexport;
            }
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.record_path(path, false);
        // Generic arguments hold paths of their own: `Vec<crate::store::Row>`.
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.scan_tokens(mac.tokens.clone());
    }

    fn visit_attribute(&mut self, attr: &'ast Attribute) {
        // `#[diesel(table_name = ..)]` names diesel with one segment.
        self.record_path(attr.path(), true);
        if let Meta::List(list) = &attr.meta {
            self.scan_tokens(list.tokens.clone());
        }
    }
}
