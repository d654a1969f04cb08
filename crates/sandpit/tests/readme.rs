//! The README's examples are real programs: every `rust` code block marked `<!-- example: FILE -->` must be
//! FILE verbatim (so it compiles: cargo builds the examples), and each example runs against a real
//! daemon and prints what the README says.

mod common;

use std::path::Path;

const README: &str = include_str!("../README.md");

/// `(file, code)` of every marked block.
fn marked_blocks() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = README.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix("<!-- example: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```rust"),
            "a ```rust block after {line}"
        );
        let code: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        out.push((file.to_owned(), code.join("\n") + "\n"));
    }
    out
}

#[test]
fn readme_blocks_are_the_example_files_verbatim() {
    let blocks = marked_blocks();
    assert!(!blocks.is_empty(), "no marked example in the README");
    for (file, code) in blocks {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(code, text, "README block differs from {file}");
    }
}

#[test]
fn the_quickstart_example_runs_and_prints_what_the_readme_says() {
    let bin = sandpit_testkit::target_dir().join("debug/examples/quickstart");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build -p sandpit --examples` (cargo test builds it)",
        bin.display()
    );
    let d = common::Daemon::start();
    let out = std::process::Command::new(&bin)
        .env("SANDPIT_URL", &d.url)
        .env("SANDPIT_API_KEY", &d.key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("hello from "), "{stdout}");
    assert_eq!(
        &lines[1..],
        ["words: 3", "tick 1", "tick 2", "tick 3"],
        "{stdout}"
    );
    // The README shows the same lines.
    for l in &lines[1..] {
        assert!(README.contains(&format!("\n{l}\n")), "README lacks {l:?}");
    }
}
