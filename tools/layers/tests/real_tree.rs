//! The layer rules over the real tree: every service and the runtime.

use std::path::{Path, PathBuf};

use layers::{check_workspace, Rule, Violation};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_services_and_the_runtime_keep_the_layer_rules() {
    let report = check_workspace(&workspace_root()).unwrap();

    // An empty list must mean "checked and clean", not "found nothing".
    let services: Vec<&str> = report
        .crates
        .iter()
        .map(|(src, _)| src.as_str())
        .filter(|src| src.starts_with("services/"))
        .collect();
    assert_eq!(
        services,
        [
            "services/concert/src",
            "services/member-balance/src",
            "services/payment/src",
            "services/queue/src",
            "services/reservation/src",
        ]
    );
    assert!(report.crates.iter().all(|(_, files)| *files >= 5));
    assert!(report.crates.iter().any(|(src, _)| src == "runtime/src"));

    let listing: Vec<String> = report.violations.iter().map(Violation::to_string).collect();
    assert!(
        report.violations.is_empty(),
        "{} layer rule violations (docs/architecture.md, \"Layer rules\"):\n{}",
        listing.len(),
        listing.join("\n")
    );
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The real test's failure is shown, not assumed: a copy of the tree with
/// one planted `use crate::store::..` in a service's api reports exactly
/// that line, on top of whatever the real tree reports.
#[test]
fn a_planted_api_import_of_store_is_reported() {
    let root = workspace_root();
    let copy = tempfile::tempdir().unwrap();
    let service = copy.path().join("services/queue");
    copy_tree(&root.join("services/queue/src"), &service.join("src")).unwrap();
    copy_tree(&root.join("runtime/src"), &copy.path().join("runtime/src")).unwrap();
    let before = check_workspace(copy.path()).unwrap().violations;

    // The api room as a file or a folder: `api.rs` or `api/mod.rs`.
    let api = ["src/api.rs", "src/api/mod.rs"]
        .iter()
        .map(|p| service.join(p))
        .find(|p| p.exists())
        .unwrap();
    let mut source = std::fs::read_to_string(&api).unwrap();
    // At the end, where inner attributes and doc comments cannot be, and
    // no other line moves.
    if !source.ends_with('\n') {
        source.push('\n');
    }
    let planted_line = source.lines().count() + 1;
    source.push_str("use crate::store::*;\n");
    std::fs::write(&api, source).unwrap();
    let after = check_workspace(copy.path()).unwrap().violations;

    let new: Vec<&Violation> = after.iter().filter(|v| !before.contains(v)).collect();
    let api_file = format!(
        "services/queue/{}",
        api.strip_prefix(&service)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    );
    assert_eq!(new.len(), 1, "{new:#?}");
    assert_eq!(new[0].file, api_file);
    assert_eq!(new[0].line, planted_line);
    assert_eq!(new[0].rule, Rule::Rooms);
    assert!(new[0].message.contains("api refers to store"), "{}", new[0]);
    assert_eq!(after.len(), before.len() + 1, "{after:#?}");
}
