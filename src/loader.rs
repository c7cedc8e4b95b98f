//! Reads a rule directory and compiles it: the one loader behind `serve`, `check`,
//! `simulate`, SIGHUP and `POST /-/reload`.

use std::path::{Path, PathBuf};

use crate::rules::{compile, RuleErrors, RuleSet, Source};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot read the rule directory {path}: {source}; pass the right one with --rules DIR"
    )]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Rules(#[from] RuleErrors),
}

/// Reads every `*.yaml` and `*.yml` file in `dir` (not recursively) and compiles them.
pub fn load_rules(dir: &Path) -> Result<RuleSet, LoadError> {
    compile(&read_sources(dir)?).map_err(LoadError::Rules)
}

pub fn read_sources(dir: &Path) -> Result<Vec<Source>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| LoadError::Dir {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::File {
            path: path.clone(),
            source,
        })?;
        sources.push(Source { path, text });
    }
    Ok(sources)
}
