//! Which userspace key a process uses. A WireGuard peer has one endpoint, so two processes
//! with one key would steal the gateway's replies from each other: each running `forward`,
//! `connect` or `proxy` holds a lock on a key of its own, the first free one of a small pool
//! kept in the store. A crashed process's lock goes with it.

use anyhow::{bail, Context, Result};

use crate::platform::{self, FileLock};
use crate::project_id::ProjectId;
use crate::store::{KeyPair, Store};

/// Userspace processes that can run at once for one project.
pub const POOL: usize = 32;

/// Slots below this keep their key registered when their process ends; the others deregister
/// it. The first slot serves the common case, one process at a time (an ssh ProxyCommand runs
/// `connect` for every session): its key stays a peer on the gateway, so the next start skips
/// the peer's set-up there and exits without a call to the platform. Extra slots serve bursts
/// of parallel processes and would otherwise stay registered forever, up to [`POOL`] keys a
/// machine.
pub const KEPT_REGISTERED: usize = 1;

/// A key no other process uses while this is alive.
pub struct LeasedKey {
    pub keys: KeyPair,
    pub slot: usize,
    _lock: FileLock,
}

impl LeasedKey {
    /// Whether the key stays registered with the platform after its process ends.
    pub fn stays_registered(&self) -> bool {
        self.slot < KEPT_REGISTERED
    }
}

pub fn lease(store: &Store, project_id: &ProjectId) -> Result<LeasedKey> {
    for slot in 0..POOL {
        let (keys, path) = store.userspace_key(project_id, slot)?;
        let lock = platform::try_lock(&path).with_context(|| format!("locking {}", path.display()))?;
        if let Some(lock) = lock {
            return Ok(LeasedKey {
                keys,
                slot,
                _lock: lock,
            });
        }
    }
    bail!("{POOL} userspace connections to this project are running already; end some of them first")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_holder_gets_its_own_key_and_a_freed_one_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());

        let project: ProjectId = "p1".parse().unwrap();
        let first = lease(&store, &project).unwrap();
        let second = lease(&store, &project).unwrap();
        let first_public = first.keys.public_base64();
        drop(first);
        let again = lease(&store, &project).unwrap();

        assert_eq!((second.slot, again.slot), (1, 0));
        assert_ne!(second.keys.public_base64(), first_public);
        assert_eq!(again.keys.public_base64(), first_public);
        assert!(again.stays_registered());
        assert!(!second.stays_registered());
    }
}
