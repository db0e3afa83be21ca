//! Token and key store: the API token, an optional API address, and one WireGuard key pair per
//! project, kept in the invoking user's config dir (also under sudo) in files only they can read.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::platform::{self, Invoker};
use crate::project_id::ProjectId;

/// Overrides the store's directory.
pub const CONFIG_DIR_ENV: &str = "CORRIDOR_CONFIG_DIR";
/// A token here wins over the stored one.
pub const TOKEN_ENV: &str = "CORRIDOR_TOKEN";
/// The platform's own CLI's variable, accepted too (after [`TOKEN_ENV`]), so nobody moving from
/// it needs a new one.
pub const ZEROPS_TOKEN_ENV: &str = "ZEROPS_TOKEN";

/// The token from the environment: `CORRIDOR_TOKEN`, else `ZEROPS_TOKEN` (empty ones ignored).
pub fn token_from_env() -> Option<String> {
    [TOKEN_ENV, ZEROPS_TOKEN_ENV]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|t| t.trim().to_owned())
        .find(|t| !t.is_empty())
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Who gets what we create: the user who ran sudo; `None` leaves it to the current user.
    owner: Option<Invoker>,
}

/// A WireGuard (x25519) key pair. Its `Debug` shows only the public half.
#[derive(Clone)]
pub struct KeyPair {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl Store {
    /// The invoking user's store: `CORRIDOR_CONFIG_DIR`, else the user's config dir, resolved
    /// through `SUDO_USER` when running as root under sudo.
    pub fn open() -> Result<Store> {
        let env = |name: &str| std::env::var_os(name);
        let (dir, owner) = locate(&env, platform::is_elevated())?;
        tracing::debug!(dir = %dir.display(), sudo = owner.is_some(), "store");
        Ok(Store { dir, owner })
    }

    /// A store in `dir`, owned by whoever runs this.
    pub fn at(dir: impl Into<PathBuf>) -> Store {
        Store {
            dir: dir.into(),
            owner: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn save_token(&self, token: &str) -> Result<()> {
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("the token must be one word with no spaces or line breaks");
        }
        self.ensure_dir(&self.dir)?;
        self.write_private(&self.token_path(), format!("{token}\n").as_bytes(), Replace::Yes)?;
        Ok(())
    }

    /// `CORRIDOR_TOKEN`, else `ZEROPS_TOKEN` (if set and not empty), else the stored token.
    pub fn token(&self) -> Result<Option<String>> {
        if let Some(token) = token_from_env() {
            return Ok(Some(token));
        }
        let Some(text) = read_optional(&self.token_path())? else {
            return Ok(None);
        };
        let token = text.trim();
        Ok((!token.is_empty()).then(|| token.to_owned()))
    }

    /// Returns whether there was a stored token.
    pub fn remove_token(&self) -> Result<bool> {
        remove_optional(&self.token_path())
    }

    /// Remembers the API address, for when neither `--api` nor `CORRIDOR_API` is given.
    pub fn save_api_base(&self, base: &str) -> Result<()> {
        self.update_config(|config| config.api = Some(base.trim().to_owned()))
    }

    /// Remembers the region the API address came from (`None`: it came from `--api`).
    pub fn save_region(&self, name: Option<&str>) -> Result<()> {
        self.update_config(|config| config.region = name.map(str::to_owned))
    }

    pub fn region(&self) -> Result<Option<String>> {
        Ok(self.read_config()?.region.and_then(non_empty))
    }

    pub fn api_base(&self) -> Result<Option<String>> {
        Ok(self.read_config()?.api.and_then(non_empty))
    }

    fn update_config(&self, change: impl FnOnce(&mut Config)) -> Result<()> {
        let mut config = self.read_config()?;
        change(&mut config);
        let text = serde_json::to_string_pretty(&config)? + "\n";
        self.ensure_dir(&self.dir)?;
        self.write_private(&self.config_path(), text.as_bytes(), Replace::Yes)?;
        Ok(())
    }

    fn read_config(&self) -> Result<Config> {
        let path = self.config_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(Config::default());
        };
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of settings; fix or delete it", path.display()))
    }

    /// The project's key pair, generated and saved on first use, the same one afterwards.
    pub fn project_key(&self, project_id: &ProjectId) -> Result<KeyPair> {
        self.key_at(&self.key_path(project_id), project_id)
    }

    /// A key pair of the userspace mode (`forward`, `connect`, `proxy`) for a project, and its
    /// file: peers of their own, so they run beside a `vpn up` connection to the same project.
    /// Each running process needs its own (a WireGuard peer has one endpoint), hence `slot`.
    pub fn userspace_key(&self, project_id: &ProjectId, slot: usize) -> Result<(KeyPair, PathBuf)> {
        let name = match slot {
            0 => format!("{project_id}.userspace.key"),
            n => format!("{project_id}.userspace-{n}.key"),
        };
        let path = self.keys_dir().join(name);
        Ok((self.key_at(&path, project_id)?, path))
    }

    fn key_at(&self, path: &Path, project_id: &ProjectId) -> Result<KeyPair> {
        if let Some(pair) = read_key(path)? {
            return Ok(pair);
        }
        self.ensure_dir(&self.keys_dir())?;
        let pair = KeyPair::generate();
        let text = format!("{}\n", crate::keys::encode(pair.secret.as_bytes()));
        if self.write_private(path, text.as_bytes(), Replace::No)? {
            tracing::info!(%project_id, public_key = %pair.public_base64(), "new key pair");
            return Ok(pair);
        }
        // Another corridor saved a key first; using theirs keeps one key per project.
        read_key(path)?.with_context(|| format!("key file {} vanished", path.display()))
    }

    /// The key pair of `vpn config` for a project, and its file: a peer of its own, so that a
    /// configuration used elsewhere never fights this machine's `vpn up` for the endpoint.
    pub fn config_key(&self, project_id: &ProjectId) -> Result<(KeyPair, PathBuf)> {
        let path = self.keys_dir().join(format!("{project_id}.config.key"));
        Ok((self.key_at(&path, project_id)?, path))
    }

    /// Every key file this machine holds for a project, with what it serves, in the order
    /// connection, rootless slots, config. A file that is no key (corrupted) is an error naming it.
    pub fn local_keys(&self, project_id: &ProjectId) -> Result<Vec<LocalKey>> {
        let entries = match fs::read_dir(self.keys_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.keys_dir().display())),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.keys_dir().display()))?;
            let Some(role) = KeyRole::of_file(project_id, &entry.file_name().to_string_lossy()) else {
                continue;
            };
            let path = entry.path();
            // Gone since the listing: another corridor removed it.
            let Some(pair) = read_key(&path)? else {
                continue;
            };
            keys.push(LocalKey { role, path, pair });
        }
        keys.sort_by_key(|k| k.role);
        Ok(keys)
    }

    /// Returns whether there was a key.
    pub fn remove_project_key(&self, project_id: &ProjectId) -> Result<bool> {
        remove_optional(&self.key_path(project_id))
    }

    /// Removes one of [`Store::local_keys`]; returns whether it was there.
    pub fn remove_key_file(&self, key: &LocalKey) -> Result<bool> {
        remove_optional(&key.path)
    }

    /// Writes a private (0600) file outside the store's own names, such as a WireGuard
    /// configuration, complete or not at all; under sudo it belongs to the user who ran sudo.
    /// Missing parent directories are created private.
    pub fn write_private_file(&self, path: &Path, contents: &[u8]) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            self.ensure_dir(dir)?;
        }
        self.write_private(path, contents, Replace::Yes)?;
        Ok(())
    }
}

/// A key file of this machine's for one project.
#[derive(Debug, Clone)]
pub struct LocalKey {
    pub role: KeyRole,
    pub path: PathBuf,
    pub pair: KeyPair,
}

/// What one of this machine's keys for a project serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum KeyRole {
    /// `vpn up`: `<project>.key`.
    Connection,
    /// `forward`, `connect`, `proxy`: `<project>.userspace.key` (slot 0),
    /// `<project>.userspace-N.key`.
    Rootless { slot: usize },
    /// `vpn config`: `<project>.config.key`.
    Config,
}

impl KeyRole {
    /// The role of a file in the keys directory named `name`, if it is a key of `project_id`.
    fn of_file(project_id: &ProjectId, name: &str) -> Option<KeyRole> {
        let rest = name.strip_prefix(project_id.as_str())?;
        match rest {
            ".key" => Some(KeyRole::Connection),
            ".userspace.key" => Some(KeyRole::Rootless { slot: 0 }),
            ".config.key" => Some(KeyRole::Config),
            _ => {
                let digits = rest.strip_prefix(".userspace-")?.strip_suffix(".key")?;
                // `-0` and leading zeros are no name `userspace_key` makes.
                let slot: usize = digits.parse().ok().filter(|&n| n > 0 && !digits.starts_with('0'))?;
                Some(KeyRole::Rootless { slot })
            }
        }
    }
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        KeyPair::from_secret(StaticSecret::random_from_rng(rand_core::OsRng))
    }

    pub fn from_secret(secret: StaticSecret) -> KeyPair {
        let public = PublicKey::from(&secret);
        KeyPair { secret, public }
    }

    /// The 44-character base64 form the platform takes.
    pub fn public_base64(&self) -> String {
        crate::keys::encode(self.public.as_bytes())
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_base64())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    /// Keep an existing file: the write reports that it did not happen.
    No,
}

/// The store's directory and who should own it, from the environment (`env`) and whether we
/// run as root.
fn locate(env: &dyn Fn(&str) -> Option<OsString>, euid_is_root: bool) -> Result<(PathBuf, Option<Invoker>)> {
    let owner = if euid_is_root {
        platform::sudo_invoker(env)
    } else {
        None
    };

    if let Some(dir) = env(CONFIG_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok((PathBuf::from(dir), owner));
    }
    if let Some(name) = owner.as_ref().and_then(|o| o.name.as_deref()) {
        // Under sudo, HOME and XDG_* may be root's or gone; the passwd entry is not.
        let home = platform::home_of(name).with_context(|| format!("cannot look up the sudo user {name:?}"))?;
        return Ok((platform::config_dir_in(&home), owner));
    }
    let dirs = directories::ProjectDirs::from("", "", "corridor")
        .context("cannot find the home directory for the config dir")?;
    Ok((dirs.config_dir().to_path_buf(), owner))
}

impl Store {
    fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn key_path(&self, project_id: &ProjectId) -> PathBuf {
        self.keys_dir().join(format!("{project_id}.key"))
    }

    /// Creates `dir` and any missing parents with mode 0700, one at a time so that each one we
    /// create can be handed to the sudo user. Existing directories are left as they are.
    fn ensure_dir(&self, dir: &Path) -> Result<()> {
        let missing: Vec<&Path> = dir
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| !p.exists())
            .collect();
        for path in missing.into_iter().rev() {
            match platform::create_private_dir(path) {
                Ok(()) => self.chown(path)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
            }
        }
        Ok(())
    }

    /// Writes `contents` to a 0600 file at `path`. The file is complete and private from the
    /// moment it has its name: written under a temporary name, then renamed (`Replace::Yes`) or
    /// linked, which fails if the name is taken (`Replace::No`, returning `false`).
    fn write_private(&self, path: &Path, contents: &[u8], replace: Replace) -> Result<bool> {
        let name = path.file_name().context("a store file needs a name")?.to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let written = self.write_new_file(&tmp, contents).and_then(|()| match replace {
            Replace::Yes => fs::rename(&tmp, path).map(|()| true),
            Replace::No => match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
        });
        // After a rename the temporary name is gone already.
        let _ = fs::remove_file(&tmp);
        written.with_context(|| format!("cannot write {}", path.display()))
    }

    fn write_new_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = platform::create_private_file(path)?;
        file.write_all(contents)?;
        file.sync_all()?;
        self.chown(path).map_err(io::Error::other)
    }

    fn chown(&self, path: &Path) -> Result<()> {
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        platform::hand_over(path, owner).with_context(|| format!("cannot hand {} to the sudo user", path.display()))
    }
}

fn read_key(path: &Path) -> Result<Option<KeyPair>> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let bytes = crate::keys::decode(&text).with_context(|| {
        format!(
            "the key file {} is corrupted (expected a base64 32-byte key); \
                 delete it and connect again to register a new key",
            path.display()
        )
    })?;
    Ok(Some(KeyPair::from_secret(StaticSecret::from(bytes))))
}

/// The settings file (`config.json`): where `login` found the API.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// Settings another version wrote, kept as they were.
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

fn non_empty(text: String) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn remove_optional(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

// The store's tests check Unix file modes; Windows keeps the files private through the ACL of the
// user's profile instead.
#[cfg(all(test, unix))]
mod tests {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    #[test]
    fn token_file_is_0600_in_a_0700_dir() {
        let (_tmp, store) = store();

        store.save_token("tok").unwrap();

        assert_eq!(mode(&store.dir().join("token")), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
    }

    #[test]
    fn saved_token_is_read_back() {
        let _env = env_lock(None);
        let (_tmp, store) = store();

        store.save_token("  tok-1\n").unwrap();

        assert_eq!(store.token().unwrap().as_deref(), Some("tok-1"));
    }

    #[test]
    fn missing_token_is_none() {
        let _env = env_lock(None);
        let (_tmp, store) = store();

        assert_eq!(store.token().unwrap(), None);
    }

    #[test]
    fn token_env_wins_over_the_file() {
        let _env = env_lock(Some("from-env"));
        let (_tmp, store) = store();
        store.save_token("from-file").unwrap();

        assert_eq!(store.token().unwrap().as_deref(), Some("from-env"));
    }

    #[test]
    fn zerops_token_is_used_after_corridor_token() {
        let _env = env_lock(None);
        let (_tmp, store) = store();
        store.save_token("from-file").unwrap();
        std::env::set_var(ZEROPS_TOKEN_ENV, "from-zerops");

        let zerops = store.token().unwrap();
        std::env::set_var(TOKEN_ENV, "from-corridor");
        let both = store.token().unwrap();
        std::env::remove_var(ZEROPS_TOKEN_ENV);

        assert_eq!(zerops.as_deref(), Some("from-zerops"));
        assert_eq!(both.as_deref(), Some("from-corridor"));
    }

    #[test]
    fn empty_token_env_is_ignored() {
        let _env = env_lock(Some(""));
        let (_tmp, store) = store();
        store.save_token("from-file").unwrap();

        assert_eq!(store.token().unwrap().as_deref(), Some("from-file"));
    }

    #[test]
    fn saving_a_token_makes_an_open_file_private() {
        let (_tmp, store) = store();
        fs::create_dir_all(store.dir()).unwrap();
        let path = store.dir().join("token");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        store.save_token("new").unwrap();

        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
    }

    #[test]
    fn a_token_with_spaces_is_refused() {
        let (_tmp, store) = store();

        assert!(store.save_token("two words").is_err());
        assert!(store.save_token("  ").is_err());
    }

    #[test]
    fn removing_the_token() {
        let _env = env_lock(None);
        let (_tmp, store) = store();
        store.save_token("tok").unwrap();

        assert!(store.remove_token().unwrap());
        assert!(!store.remove_token().unwrap());
        assert_eq!(store.token().unwrap(), None);
    }

    #[test]
    fn api_base_round_trips_and_keeps_other_settings() {
        let (_tmp, store) = store();
        assert_eq!(store.api_base().unwrap(), None);
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.dir().join("config.json"), r#"{"other": 1}"#).unwrap();

        store.save_api_base("http://198.18.0.1:8080").unwrap();

        assert_eq!(store.api_base().unwrap().as_deref(), Some("http://198.18.0.1:8080"));
        store.save_region(Some("lab2")).unwrap();
        assert_eq!(store.region().unwrap().as_deref(), Some("lab2"));
        assert_eq!(store.api_base().unwrap().as_deref(), Some("http://198.18.0.1:8080"));
        store.save_region(None).unwrap();
        assert_eq!(store.region().unwrap(), None);
        let text = fs::read_to_string(store.dir().join("config.json")).unwrap();
        assert!(text.contains("\"other\": 1"), "{text}");
    }

    #[test]
    fn corrupted_config_is_a_clear_error() {
        let (_tmp, store) = store();
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(store.dir().join("config.json"), "{not json").unwrap();

        let err = store.api_base().unwrap_err();

        assert!(
            format!("{err:#}").contains("config.json is not a JSON object"),
            "{err:#}"
        );
    }

    #[test]
    fn project_key_is_generated_once_and_reused() {
        let (_tmp, store) = store();

        let first = store.project_key(&id("proj1")).unwrap();
        let second = store.project_key(&id("proj1")).unwrap();

        assert_eq!(first.public, second.public);
        assert_eq!(first.secret.to_bytes(), second.secret.to_bytes());
        assert_eq!(first.public, PublicKey::from(&first.secret));
        assert_eq!(first.public_base64().len(), 44);
        let path = store.dir().join("keys/proj1.key");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&store.dir().join("keys")), 0o700);
        assert_eq!(
            fs::read_to_string(path).unwrap().trim(),
            BASE64.encode(first.secret.to_bytes())
        );
    }

    #[test]
    fn projects_get_different_keys() {
        let (_tmp, store) = store();

        let a = store.project_key(&id("a")).unwrap();
        let b = store.project_key(&id("b")).unwrap();

        assert_ne!(a.public, b.public);
    }

    #[test]
    fn corrupted_key_file_is_a_clear_error() {
        let (_tmp, store) = store();
        store.project_key(&id("proj1")).unwrap();
        let path = store.dir().join("keys/proj1.key");
        fs::write(&path, "garbage").unwrap();

        let err = store.project_key(&id("proj1")).unwrap_err();

        let text = format!("{err:#}");
        assert!(text.contains("corrupted"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage");
    }

    #[test]
    fn removed_key_is_replaced_by_a_new_one() {
        let (_tmp, store) = store();
        let old = store.project_key(&id("proj1")).unwrap();

        assert!(store.remove_project_key(&id("proj1")).unwrap());
        assert!(!store.remove_project_key(&id("proj1")).unwrap());
        let new = store.project_key(&id("proj1")).unwrap();

        assert_ne!(old.public, new.public);
    }

    #[test]
    fn local_keys_are_every_key_file_of_the_project_with_its_role() {
        let (_tmp, store) = store();
        let connection = store.project_key(&id("p1")).unwrap();
        let (slot0, _) = store.userspace_key(&id("p1"), 0).unwrap();
        let (slot12, _) = store.userspace_key(&id("p1"), 12).unwrap();
        let (config, config_path) = store.config_key(&id("p1")).unwrap();
        store.project_key(&id("p10")).unwrap();
        store.userspace_key(&id("p10"), 1).unwrap();
        fs::write(store.dir().join("keys/p1.userspace-01.key"), BASE64.encode([1; 32])).unwrap();

        let local = store.local_keys(&id("p1")).unwrap();

        let found: Vec<(KeyRole, String)> = local.iter().map(|k| (k.role, k.pair.public_base64())).collect();
        assert_eq!(
            found,
            vec![
                (KeyRole::Connection, connection.public_base64()),
                (KeyRole::Rootless { slot: 0 }, slot0.public_base64()),
                (KeyRole::Rootless { slot: 12 }, slot12.public_base64()),
                (KeyRole::Config, config.public_base64()),
            ]
        );
        assert_eq!(local[3].path, config_path);
        assert_eq!(mode(&config_path), 0o600);
        assert!(store.local_keys(&id("nothing")).unwrap().is_empty());
    }

    #[test]
    fn a_removed_key_file_is_gone_from_the_local_keys() {
        let (_tmp, store) = store();
        store.userspace_key(&id("p1"), 3).unwrap();
        let key = store.local_keys(&id("p1")).unwrap().remove(0);

        assert!(store.remove_key_file(&key).unwrap());
        assert!(!store.remove_key_file(&key).unwrap());
        assert!(store.local_keys(&id("p1")).unwrap().is_empty());
    }

    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        let (tmp, store) = store();
        let path = tmp.path().join("out/demo.conf");

        store.write_private_file(&path, b"one").unwrap();
        store.write_private_file(&path, b"two").unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&tmp.path().join("out")), 0o700);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let pair = KeyPair::generate();

        let text = format!("{pair:?}");

        assert!(!text.contains(&BASE64.encode(pair.secret.to_bytes())));
        assert!(text.contains(&pair.public_base64()));
    }

    #[test]
    fn config_dir_env_overrides_the_location() {
        let env = fake_env(&[(CONFIG_DIR_ENV, "/somewhere/corridor")]);

        let (dir, owner) = locate(&env, false).unwrap();

        assert_eq!(dir, PathBuf::from("/somewhere/corridor"));
        assert_eq!(owner, None);
    }

    #[test]
    fn under_sudo_the_invoking_users_config_dir_is_used() {
        let env = fake_env(&[("SUDO_USER", "root"), ("SUDO_UID", "0"), ("SUDO_GID", "0")]);
        let home = platform::home_of("root").unwrap();

        let (dir, owner) = locate(&env, true).unwrap();

        assert_eq!(dir, platform::config_dir_in(&home));
        assert_eq!(
            owner,
            Some(Invoker {
                name: Some("root".into()),
                uid: 0,
                gid: 0
            })
        );
    }

    #[test]
    fn sudo_variables_count_only_for_root() {
        let env = fake_env(&[
            ("SUDO_USER", "root"),
            ("SUDO_UID", "0"),
            ("SUDO_GID", "0"),
            (CONFIG_DIR_ENV, "/x"),
        ]);

        assert_eq!(locate(&env, false).unwrap().1, None);
        assert!(locate(&env, true).unwrap().1.is_some());
    }

    #[test]
    fn incomplete_sudo_variables_are_ignored() {
        let env = fake_env(&[("SUDO_USER", "root"), ("SUDO_UID", "0"), (CONFIG_DIR_ENV, "/x")]);

        assert_eq!(locate(&env, true).unwrap().1, None);
    }

    // Helpers

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("config/corridor"));
        (tmp, store)
    }

    fn id(text: &str) -> ProjectId {
        ProjectId::parse(text).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| OsString::from(v))
    }

    static ENV: Mutex<()> = Mutex::new(());

    /// Serialises the tests that read `CORRIDOR_TOKEN`, with it set to `value` meanwhile (and
    /// `ZEROPS_TOKEN` unset).
    fn env_lock(value: Option<&str>) -> MutexGuard<'static, ()> {
        let guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::remove_var(ZEROPS_TOKEN_ENV);
        match value {
            Some(value) => std::env::set_var(TOKEN_ENV, value),
            None => std::env::remove_var(TOKEN_ENV),
        }
        guard
    }
}
