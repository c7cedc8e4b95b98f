//! Reads a rule directory and compiles it: the one loader behind `serve`, `check`,
//! `simulate`, SIGHUP and `POST /-/reload`.

use std::path::{Path, PathBuf};

use crate::rules::{compile_in, RuleError, RuleErrors, RuleSet, Source};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "cannot read the rule directory {path}: {source}; pass the right one (serve --rules DIR, check DIR)"
    )]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem of every file, a file that could not be read among them. Transparent:
    /// the list is the message, and it is not repeated as a cause when printed as a chain.
    #[error(transparent)]
    Rules(#[from] RuleErrors),
}

/// Reads every `*.yaml` and `*.yml` file in `dir` (not recursively) and compiles them.
pub fn load_rules(dir: &Path) -> Result<RuleSet, LoadError> {
    let (sources, unreadable) = read_sources(dir)?;
    compile_in(dir, &sources, unreadable).map_err(LoadError::Rules)
}

/// The rule files of `dir` that could be read, and a problem (`file: cannot read: ...`) for
/// each one that could not, so that it is reported with the rest.
pub fn read_sources(dir: &Path) -> Result<(Vec<Source>, Vec<RuleError>), LoadError> {
    let dir_error = |source| LoadError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    let mut sources = Vec::new();
    let mut unreadable = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || path.is_dir() {
            continue;
        }
        // Anything else named *.yaml is meant as a rule file: a dangling link or a file that
        // is not UTF-8 is reported, not skipped.
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(Source { path, text }),
            Err(e) => unreadable.push(RuleError {
                path,
                pos: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    Ok((sources, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(dir: &Path) -> Vec<String> {
        match load_rules(dir) {
            Ok(_) => vec![],
            Err(LoadError::Rules(e)) => e.0.iter().map(|e| e.to_string()).collect(),
            Err(e) => vec![format!("not a list of rule errors: {e}")],
        }
    }

    #[test]
    fn a_missing_escalation_file_is_reported_without_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        assert_eq!(
            errors(dir.path()),
            [format!(
                "{d}/escalation.yaml: missing: the contacts and escalation policies live here; copy the one shipped in rules/"
            )]
        );
    }

    #[test]
    fn a_file_that_cannot_be_read_is_reported_with_its_path_and_the_rest_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        std::fs::copy(
            shipped.join("escalation.yaml"),
            dir.path().join("escalation.yaml"),
        )
        .unwrap();
        std::fs::write(dir.path().join("10-latin1.yaml"), b"rules: [\xe9]\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("nowhere.yaml", dir.path().join("20-dangling.yaml")).unwrap();
        std::fs::write(dir.path().join("30-bad.yaml"), "rules:\n  - name: x\n").unwrap();
        // Not rule files: skipped.
        std::fs::create_dir(dir.path().join("old.yaml")).unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml: [").unwrap();

        let mut want = vec![format!(
            "{d}/10-latin1.yaml: cannot read: stream did not contain valid UTF-8"
        )];
        #[cfg(unix)]
        want.push(format!(
            "{d}/20-dangling.yaml: cannot read: No such file or directory (os error 2)"
        ));
        for key in ["matchers", "priority", "rto", "owner", "target", "steps"] {
            let hint = match key {
                "matchers" => " (e.g. matchers: ['alertname=\"PostgresDown\"'])",
                "priority" => " (one of P1, P2, P3, P4)",
                "rto" => " (the recovery time objective, e.g. rto: 30m)",
                "owner" => " (a contact in escalation.yaml)",
                "target" => " (e.g. target: { service: postgres })",
                _ => " (e.g. steps: [ { diagnose: {} } ])",
            };
            want.push(format!(
                "{d}/30-bad.yaml:2:5: rule `x`: missing key `{key}`{hint}"
            ));
        }
        assert_eq!(errors(dir.path()), want);
    }

    #[test]
    fn an_unreadable_escalation_file_is_not_also_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("escalation.yaml"), b"\xff\xfe").unwrap();
        assert_eq!(
            errors(dir.path()),
            [format!(
                "{d}/escalation.yaml: cannot read: stream did not contain valid UTF-8"
            )]
        );
    }

    #[test]
    fn a_missing_directory_says_which() {
        let err = load_rules(Path::new("/nonexistent/rules")).unwrap_err();
        assert!(matches!(err, LoadError::Dir { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("cannot read the rule directory /nonexistent/rules: "),
            "{err}"
        );
    }
}
