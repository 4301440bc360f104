//! Running cargo, and other tools, from a task: each command is announced as a `==> step`, runs in
//! the workspace root, and a failure names the exact command line so it can be re-run by hand.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Workspace;

/// A `cargo` command in the workspace root, using the cargo that started xtask (same toolchain).
pub fn cargo(workspace: &Workspace) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace.root());
    command
}

/// Runs `command` with inherited stdio, failing unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = command_line(command);
    eprintln!("==> {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns what it wrote to stdout (its stderr is shown), failing unless it
/// exits successfully.
pub fn output(command: &mut Command) -> Result<String> {
    let line = command_line(command);
    eprintln!("==> {line}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{line}` printed invalid UTF-8"))
}

/// `command` as a shell line a person can copy: environment assignments first, the cargo binary
/// shown as `cargo`, arguments quoted where a shell would need it.
pub fn command_line(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.display(), quote(value?))))
        .collect();
    let program = command.get_program();
    let is_our_cargo = std::env::var_os("CARGO").is_some_and(|cargo| cargo == program);
    words.push(if is_our_cargo {
        "cargo".to_owned()
    } else {
        quote(program)
    });
    words.extend(command.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_show_environment_and_quote_what_needs_it() {
        let mut command = Command::new("cargo");
        command
            .args(["test", "--", "it's a test", ""])
            .env("WEIR_FUNCTIONS_DIR", "/t/functions");
        assert_eq!(
            command_line(&command),
            r"WEIR_FUNCTIONS_DIR=/t/functions cargo test -- 'it'\''s a test' ''"
        );
    }
}
