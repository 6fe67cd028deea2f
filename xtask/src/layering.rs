//! The layering rules of `docs/ARCHITECTURE.md`, checked over `cargo metadata`.
//!
//! Moving a crate between layers is a one-row change to [`LAYERS`]. The
//! `#[test]`s below make `cargo test` fail when a dependency edge breaks a
//! rule.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde_json::Value;

/// Every workspace crate and its layer (0 = base … 4 = binaries).
pub const LAYERS: &[(&str, u8)] = &[
    ("stack-core", 0),
    ("stack-crypto", 0),
    ("stack-audit", 1),
    ("stack-scan", 1),
    ("stack-passport", 1),
    ("stack-proxy", 1),
    ("stack-app", 2),
    ("stack-store", 3),
    ("stack-http", 3),
    ("stack-mcp", 3),
    ("stack-bus", 3),
    ("stack-egress", 3),
    ("stack-server", 4),
    ("xtask", 5),
];

/// Same-layer edges that are allowed (from, to).
pub const SAME_LAYER_EDGES: &[(&str, &str)] = &[("stack-crypto", "stack-core")];

/// Crates that L0–L1 must not pull in, directly or transitively.
pub const FORBIDDEN_IN_DOMAIN: &[&str] = &["tokio", "hyper", "axum", "sea-orm", "reqwest", "sqlx"];

/// External crates only one workspace crate may name directly.
pub const WRAPPERS: &[(&str, &str)] = &[("ring", "stack-crypto"), ("sea-orm", "stack-store")];

struct Graph {
    /// package id → (name, is workspace member)
    names: HashMap<String, String>,
    members: HashSet<String>,
    /// package id → normal (non-dev, non-build) dependency ids
    normal: HashMap<String, Vec<String>>,
}

fn load(root: &Path) -> anyhow::Result<Graph> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let mut names = HashMap::new();
    for p in meta["packages"].as_array().context("packages")? {
        if let (Some(id), Some(name)) = (p["id"].as_str(), p["name"].as_str()) {
            names.insert(id.to_owned(), name.to_owned());
        }
    }
    let members: HashSet<String> = meta["workspace_members"]
        .as_array()
        .context("workspace_members")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let mut normal = HashMap::new();
    for node in meta["resolve"]["nodes"]
        .as_array()
        .context("resolve.nodes")?
    {
        let Some(id) = node["id"].as_str() else {
            continue;
        };
        let deps = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .collect();
        normal.insert(id.to_owned(), deps);
    }
    Ok(Graph {
        names,
        members,
        normal,
    })
}

/// All rule violations, one line each (empty when the workspace is clean).
pub fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let g = load(root)?;
    let layer: HashMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut problems = Vec::new();
    for id in &g.members {
        let name = g.names.get(id).map_or("?", String::as_str);
        let Some(&my_layer) = layer.get(name) else {
            problems.push(format!(
                "{name}: not in the LAYERS table (xtask/src/layering.rs)"
            ));
            continue;
        };
        for dep in g.normal.get(id).into_iter().flatten() {
            let dep_name = g.names.get(dep).map_or("?", String::as_str);
            if g.members.contains(dep) {
                let dep_layer = layer.get(dep_name).copied().unwrap_or(u8::MAX);
                let allowed = dep_layer < my_layer
                    || (dep_layer == my_layer && SAME_LAYER_EDGES.contains(&(name, dep_name)));
                if !allowed {
                    problems.push(format!(
                        "{name} (L{my_layer}) depends on {dep_name} (L{dep_layer})"
                    ));
                }
            } else if let Some((_, owner)) = WRAPPERS.iter().find(|(ext, _)| *ext == dep_name)
                && *owner != name
                && my_layer < 5
            {
                problems.push(format!(
                    "{name} names {dep_name} directly; only {owner} may"
                ));
            }
        }
        if my_layer <= 1 {
            let closure = closure(&g, id);
            for bad in FORBIDDEN_IN_DOMAIN {
                if closure.contains(*bad) {
                    problems.push(format!(
                        "{name} (L{my_layer}) pulls {bad} into its dependency closure"
                    ));
                }
            }
        }
    }
    problems.sort();
    Ok(problems)
}

fn closure(g: &Graph, start: &str) -> BTreeSet<String> {
    let mut seen = HashSet::new();
    let mut stack = vec![start.to_owned()];
    let mut names = BTreeSet::new();
    while let Some(id) = stack.pop() {
        for dep in g.normal.get(&id).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                if let Some(n) = g.names.get(dep) {
                    names.insert(n.clone());
                }
                stack.push(dep.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_follows_the_layering_rules() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let problems = check(root).unwrap();
        assert!(
            problems.is_empty(),
            "layering violations:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_layer_row_names_a_real_crate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let g = load(root).unwrap();
        let members: HashSet<&str> = g
            .members
            .iter()
            .filter_map(|id| g.names.get(id).map(String::as_str))
            .collect();
        for (name, _) in LAYERS {
            assert!(
                members.contains(name),
                "{name} is in LAYERS but not in the workspace"
            );
        }
    }
}
