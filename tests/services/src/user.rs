//! Who this process runs as, and the unprivileged account a server is handed to when that is root.
//!
//! PostgreSQL refuses to run as root, and sessions and CI run as root. Rather than wrapping every
//! command in `runuser`, a command is given the account's uid and gid directly
//! ([`SystemUser::assign`]), so the child we keep is the server itself and signals reach it.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Whether this process runs with effective uid 0.
pub(crate) fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

/// The effective uid, from `/proc/self/status` (no libc), falling back to `id -u`.
fn effective_uid() -> Option<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(uid) = parse_effective_uid(&status)
    {
        return Some(uid);
    }
    let output = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// `Uid:` lists the real, effective, saved and filesystem uids; the effective one decides.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A system account looked up by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SystemUser {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl SystemUser {
    /// Looks the account up with `getent passwd` (so NSS sources count), then `/etc/passwd`.
    pub(crate) fn lookup(name: &str) -> Result<Option<Self>> {
        let passwd = match Command::new("getent").args(["passwd", name]).output() {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
            _ => fs::read_to_string("/etc/passwd").unwrap_or_default(),
        };
        Ok(passwd
            .lines()
            .find_map(|line| parse_passwd_line(line, name)))
    }

    /// Makes `command` run as this account.
    pub(crate) fn assign(&self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }

    /// Gives `path` (not its contents) to this account, so a server running as it can write there.
    pub(crate) fn give(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("cannot give {} to user {}", path.display(), self.name))
    }
}

fn parse_passwd_line(line: &str, name: &str) -> Option<SystemUser> {
    let mut fields = line.split(':');
    if fields.next()? != name {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(SystemUser {
        name: name.to_owned(),
        uid,
        gid,
    })
}

/// The account a server must run as: `None` (this process's own) unless we are root, in which case
/// the named system account, which must exist.
pub(crate) fn unprivileged_account(name: &str, why: &str) -> Result<Option<SystemUser>> {
    if !running_as_root() {
        return Ok(None);
    }
    match SystemUser::lookup(name)? {
        Some(user) if user.uid != 0 => Ok(Some(user)),
        Some(_) => bail!("the `{name}` system user has uid 0; {why}"),
        None => bail!(
            "this process runs as root and {why}, but there is no `{name}` system user: \
             install the Debian package that creates it (`apt-get install postgresql`) or run as \
             an unprivileged user"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_number_of_the_uid_line() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_effective_uid(status), Some(0));
    }

    #[test]
    fn passwd_lines_give_uid_and_gid_of_the_named_user_only() {
        let line = "postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash";
        assert_eq!(
            parse_passwd_line(line, "postgres"),
            Some(SystemUser {
                name: "postgres".into(),
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(parse_passwd_line(line, "postgre"), None);
    }

    #[test]
    fn this_process_knows_whether_it_is_root() {
        let id = Command::new("id").arg("-u").output().unwrap();
        let expected = String::from_utf8(id.stdout).unwrap().trim() == "0";
        assert_eq!(running_as_root(), expected);
    }
}
