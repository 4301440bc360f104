//! `weir`'s command line as a user meets it: the built binary explains itself.
//!
//! Also makes `cargo test --workspace` build `target/<profile>/weir` with the same features as
//! every other test target, for the tests that run real `weir serve` processes (weir-services'
//! `WeirHost`, the multi-region topology) without a second build of the dependency graph.

use std::process::Command;

fn weir(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("the weir binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn help_names_every_command() {
    let (ok, text) = weir(&["--help"]);
    assert!(ok, "{text}");
    for command in [
        "serve",
        "simulate",
        "functions",
        "rules",
        "pki",
        "token",
        "webhooks",
    ] {
        assert!(
            text.contains(command),
            "`weir --help` does not mention {command}:\n{text}"
        );
    }
}

#[test]
fn simulate_takes_a_list_of_region_endpoints() {
    let (ok, text) = weir(&["simulate", "--help"]);
    assert!(ok, "{text}");
    assert!(text.contains("--endpoint"), "{text}");
    assert!(text.contains("fails over"), "{text}");
}

#[test]
fn an_unknown_command_fails_with_a_hint() {
    let (ok, text) = weir(&["serv"]);
    assert!(!ok);
    assert!(text.contains("serve"), "a suggestion is expected: {text}");
}
