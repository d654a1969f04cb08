//! Replays fuzz inputs through the target bodies on any toolchain, without libFuzzer: every file under
//! `DIR/<target>/` (default `fuzz/corpus`) through that target. It is the stable fallback of
//! scripts/fuzz.sh, and a quick way to re-run one crash file: `replay --file <target> <path>`.
//!
//! Exits non-zero if any input panics (each crashing path is printed) or a target has no corpus.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sandpit_fuzz_harness::{TARGETS, Target};

fn run(name: &str, target: Target, path: &Path) -> bool {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("replay: cannot read {}: {e}", path.display());
            return false;
        }
    };
    // The default panic hook still prints the message; this only keeps going to the next input.
    let ok = std::panic::catch_unwind(|| target(&data)).is_ok();
    if !ok {
        eprintln!("replay: CRASH in {name}: {}", path.display());
    }
    ok
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name, file] = args.as_slice() {
        if flag == "--file" {
            let Some(&(_, target)) = TARGETS.iter().find(|(n, _)| n == name) else {
                eprintln!("replay: no target {name}");
                return ExitCode::FAILURE;
            };
            return if run(name, target, Path::new(file)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    }
    let root = PathBuf::from(args.first().map_or("fuzz/corpus", String::as_str));
    let (mut inputs, mut crashes, mut missing) = (0, 0, 0);
    for &(name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect(),
            Err(e) => {
                eprintln!("replay: {name}: no corpus at {}: {e}", dir.display());
                missing += 1;
                continue;
            }
        };
        files.sort();
        for f in &files {
            inputs += 1;
            if !run(name, target, f) {
                crashes += 1;
            }
        }
        eprintln!("replay: {name}: {} inputs", files.len());
    }
    eprintln!(
        "replay: {inputs} inputs, {} targets, {crashes} crashes, {missing} without a corpus",
        TARGETS.len()
    );
    if crashes > 0 || missing > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
