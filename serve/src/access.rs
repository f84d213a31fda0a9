//! Who may do what: the peer's credentials (SO_PEERCRED) against the access
//! policy.
//!
//! The policy is a JSON file (see `spec/qmp.md`, "Access control"):
//!
//! ```json
//! { "query":   { "users": ["nova"], "groups": ["libvirt"], "uids": [107], "gids": [] },
//!   "migrate": { "users": [], "groups": ["libvirt"], "uids": [], "gids": [] } }
//! ```
//!
//! `query` covers the read-only commands (describe, check, labels, query-*);
//! `migrate` covers everything that moves state or holds resources, and implies
//! `query`. Root and the service's own uid always have both: they could run the
//! CLI directly. A gid rule matches the peer's primary gid as SO_PEERCRED reports
//! it. Without a policy file only root and the service's uid are let in.

use std::collections::BTreeSet;
use std::path::Path;

use mdevmig::{Code, Error, Result};
use serde::Deserialize;

/// What a peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// Read-only commands.
    pub query: bool,
    /// Commands that move state or hold resources.
    pub migrate: bool,
}

/// Users and groups given one right.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    query: Grant,
    #[serde(default)]
    migrate: Grant,
}

/// A grant with names resolved to ids.
#[derive(Debug, Clone, Default)]
struct Ids {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl Ids {
    fn has(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }
}

/// The access policy in force.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    query: Ids,
    migrate: Ids,
    own_uid: u32,
}

const MAX_POLICY: u64 = 1 << 20;

impl AccessPolicy {
    /// Only root and the service's own uid.
    pub fn owner_only() -> Self {
        AccessPolicy {
            own_uid: rustix::process::geteuid().as_raw(),
            ..Default::default()
        }
    }

    /// Loads a policy file: a regular file, not a symlink, not writable by group
    /// or others, owned by root or the service's uid (a policy anyone can edit
    /// grants nothing).
    pub fn load(path: &Path) -> Result<Self> {
        let f = mdevmig::fsutil::open_regular(path, Code::BadDescriptor)?;
        let meta = f
            .metadata()
            .map_err(|e| Error::io(Code::IoOpen, path.display(), &e))?;
        let own = rustix::process::geteuid().as_raw();
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != own) {
            return Err(Error::new(
                Code::TrustStorePermissions,
                format!(
                    "{}: an access policy must be owned by root or uid {own} and not writable by group or others (mode {:o}, owner {})",
                    path.display(),
                    meta.mode() & 0o7777,
                    meta.uid()
                ),
            ));
        }
        let mut text = String::new();
        use std::io::Read;
        f.take(MAX_POLICY + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(Code::IoRead, path.display(), &e))?;
        if u64::try_from(text.len()).map_or(true, |n| n > MAX_POLICY) {
            return Err(Error::new(
                Code::InputTooLarge,
                format!("{}: larger than 1 MiB", path.display()),
            ));
        }
        Self::parse(&text).map_err(|e| Error::new(e.code, format!("{}: {}", path.display(), e.message)))
    }

    /// Parses a policy's JSON, resolving user and group names.
    pub fn parse(text: &str) -> Result<Self> {
        let p: PolicyFile =
            serde_json::from_str(text).map_err(|e| Error::new(Code::BadDescriptor, e.to_string()))?;
        Ok(AccessPolicy {
            query: resolve(&p.query)?,
            migrate: resolve(&p.migrate)?,
            own_uid: rustix::process::geteuid().as_raw(),
        })
    }

    /// What a peer with these credentials may do.
    pub fn rights(&self, uid: u32, gid: u32) -> Rights {
        if uid == 0 || uid == self.own_uid {
            return Rights {
                query: true,
                migrate: true,
            };
        }
        let migrate = self.migrate.has(uid, gid);
        Rights {
            query: migrate || self.query.has(uid, gid),
            migrate,
        }
    }
}

fn resolve(g: &Grant) -> Result<Ids> {
    let mut ids = Ids {
        uids: g.uids.iter().copied().collect(),
        gids: g.gids.iter().copied().collect(),
    };
    for name in &g.users {
        let u = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| Error::new(Code::BadDescriptor, format!("no user named {name:?}")))?;
        ids.uids.insert(u.uid.as_raw());
    }
    for name in &g.groups {
        let gr = nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(|| Error::new(Code::BadDescriptor, format!("no group named {name:?}")))?;
        ids.gids.insert(gr.gid.as_raw());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_implies_query_and_strangers_get_nothing() {
        let p = AccessPolicy::parse(r#"{"query":{"uids":[1001]},"migrate":{"gids":[2000]}}"#).unwrap();
        let stranger = 4242;
        assert_eq!(
            p.rights(1001, 5),
            Rights {
                query: true,
                migrate: false
            }
        );
        assert_eq!(
            p.rights(stranger, 2000),
            Rights {
                query: true,
                migrate: true
            }
        );
        assert_eq!(p.rights(stranger, 5), Rights::default());
        assert_eq!(
            p.rights(0, 0),
            Rights {
                query: true,
                migrate: true
            }
        );
    }

    #[test]
    fn unknown_members_and_names_are_refused() {
        assert!(AccessPolicy::parse(r#"{"qurey":{}}"#).is_err());
        assert!(AccessPolicy::parse(r#"{"query":{"users":["no-such-user-mdevmig"]}}"#).is_err());
        assert!(AccessPolicy::parse(r#"{"query":{"uids":[-1]}}"#).is_err());
    }
}
