//! User lookup in the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! The agent resolves users itself instead of calling libc's `getpwnam`: inside a sandbox there is no NSS
//! configuration to trust, and the lookup must happen before `fork` so the child never allocates.

use std::path::Path;

/// A resolved account: everything `setgroups`/`setgid`/`setuid` and the environment need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("unknown user {0:?}: not in {1}")]
    UnknownUser(String, String),
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
}

/// Looks `user` (a name or a numeric uid) up in `etc/passwd` and its groups in `etc/group`.
pub fn lookup(etc: &Path, user: &str) -> Result<Account, LookupError> {
    let passwd_path = etc.join("passwd");
    let passwd = std::fs::read_to_string(&passwd_path)
        .map_err(|e| LookupError::Read(passwd_path.display().to_string(), e));
    let numeric: Option<u32> = user.parse().ok();
    let found = passwd.as_ref().ok().and_then(|text| {
        text.lines()
            .filter_map(parse_passwd_line)
            .find(|a| a.name == user || Some(a.uid) == numeric)
    });
    let mut account = match (found, numeric) {
        (Some(a), _) => a,
        // A bare uid with no passwd entry is still usable, as in `docker run --user 1234`.
        (None, Some(uid)) => Account {
            name: uid.to_string(),
            uid,
            gid: uid,
            groups: vec![],
            home: "/".into(),
            shell: "/bin/sh".into(),
        },
        (None, None) => {
            passwd?;
            return Err(LookupError::UnknownUser(
                user.into(),
                passwd_path.display().to_string(),
            ));
        }
    };
    let mut groups = vec![account.gid];
    if let Ok(text) = std::fs::read_to_string(etc.join("group")) {
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            let Ok(gid) = f[2].parse::<u32>() else {
                continue;
            };
            if f[3].split(',').any(|m| m == account.name) && !groups.contains(&gid) {
                groups.push(gid);
            }
        }
    }
    account.groups = groups;
    Ok(account)
}

fn parse_passwd_line(line: &str) -> Option<Account> {
    let f: Vec<&str> = line.split(':').collect();
    // A NUL byte (root inside the sandbox may write one) could not become a C string for exec: such a
    // line is no account, rather than a panic in the agent when the process is prepared.
    if f.len() < 7 || line.starts_with('#') || line.contains('\0') {
        return None;
    }
    Some(Account {
        name: f[0].to_owned(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        groups: vec![],
        home: if f[5].is_empty() {
            "/".to_owned()
        } else {
            f[5].to_owned()
        },
        shell: f[6].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\nbroken\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\nuser:x:1000:\nwheel:x:10:user,alice\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn finds_users_by_name_and_uid_with_groups() {
        let d = etc();
        let u = lookup(d.path(), "user").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/user"));
        assert_eq!(u.groups, vec![1000, 10]);
        assert_eq!(lookup(d.path(), "0").unwrap().name, "root");
    }

    #[test]
    fn unknown_names_are_errors_and_bare_uids_are_allowed() {
        let d = etc();
        assert!(matches!(
            lookup(d.path(), "mallory"),
            Err(LookupError::UnknownUser(..))
        ));
        let a = lookup(d.path(), "4242").unwrap();
        assert_eq!((a.uid, a.gid), (4242, 4242));
    }

    /// A NUL in `/etc/passwd` used to reach `CString::new(..).expect(..)` in the agent's process plan
    /// (a panic in the request's handler): the line is not an account.
    #[test]
    fn passwd_lines_with_a_nul_byte_are_not_accounts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "evil:x:1001:1001::/home/ev\0il:/bin/sh\nok:x:1002:1002::/home/ok:/bin/sh\0\n",
        )
        .unwrap();
        assert!(matches!(
            lookup(d.path(), "evil"),
            Err(LookupError::UnknownUser(..))
        ));
        assert!(lookup(d.path(), "ok").is_err());
        // By uid it is the bare-uid account, with nothing from the bad line.
        assert_eq!(lookup(d.path(), "1001").unwrap().home, "/");
    }
}
