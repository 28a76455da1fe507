//! Man pages and shell completions, generated from the clap CLI definition so they never drift
//! from the real options. Used by `plumb generate-docs DIR` (hidden) when building the packages.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

/// Writes `DIR/man/plumb.1` (+ one page per subcommand) and `DIR/completions/{plumb.bash,_plumb,plumb.fish}`.
pub fn generate(dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(crate::cli::Cli::command(), &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(
            shell,
            &mut crate::cli::Cli::command(),
            "plumb",
            &completions,
        )
        .with_context(|| format!("writing {shell} completions to {}", completions.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_man_pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        super::generate(dir.path()).unwrap();
        let man = std::fs::read_to_string(dir.path().join("man/plumb.1")).unwrap();
        assert!(man.contains(".TH plumb 1"), "{man}");
        assert!(man.contains("validate"), "subcommands listed: {man}");
        assert!(
            !man.contains("generate\\-docs"),
            "hidden commands stay out: {man}"
        );
        assert!(dir.path().join("man/plumb-apply.1").exists());
        for f in ["plumb.bash", "_plumb", "plumb.fish"] {
            let text = std::fs::read_to_string(dir.path().join("completions").join(f)).unwrap();
            assert!(text.contains("validate"), "{f}: {text}");
        }
    }
}
