//! Linux: systemd-resolved per-link DNS when the host resolves through it, else /etc/resolv.conf
//! rewritten in place with a marker line and a journaled backup.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::plan::SEARCH_DOMAIN;
use super::{HostDns, Mode};
use crate::host::{Change, Journal};

/// A resolv.conf nameserver is always on port 53, and 127.0.0.153 stays clear of
/// systemd-resolved's 127.0.0.53 and 127.0.0.54.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 153)), 53);

use crate::host::allowed::{RESOLV_CONF, RESOLV_CONF_MARKER as MARKER};
/// Prefix of the original lines the rewrite turns off.
const DISABLED: &str = "# corridor: ";
const RESOLVED_STUBS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 53)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 54)),
];

pub fn plan(mode: Mode, listen: SocketAddr) -> Result<HostDns> {
    let resolved_running = Path::new("/run/systemd/resolve").is_dir();
    plan_at(Path::new(RESOLV_CONF), mode, listen, resolved_running)
}

pub fn apply(plan: &HostDns, responder: SocketAddr, journal: &mut Journal) -> Result<()> {
    match plan.mode {
        // Resolved is per link: `apply_link`.
        Mode::Off | Mode::Resolved => Ok(()),
        Mode::ResolvConf => rewrite_resolv_conf(Path::new(RESOLV_CONF), responder, journal),
        Mode::Auto => bail!("the DNS mode must be decided (plan_host) before it is applied"),
        Mode::Scoped => bail!("--dns scoped is for macOS and Windows; on Linux use --dns auto"),
    }
}

/// systemd-resolved's settings are per link: the tunnel interface's DNS server and domain.
pub fn apply_link(mode: Mode, responder: SocketAddr, interface: &str, _journal: &mut Journal) -> Result<()> {
    match mode {
        Mode::Resolved => configure_resolved(responder, interface),
        _ => Ok(()),
    }
}

fn plan_at(resolv_conf: &Path, mode: Mode, listen: SocketAddr, resolved_running: bool) -> Result<HostDns> {
    let content = match fs::read(resolv_conf) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", resolv_conf.display())),
    };
    // Only a host whose resolv.conf points at resolved's stub sends every program through it.
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let through_resolved = nameservers(&content, unspecified)
        .iter()
        .any(|a| RESOLVED_STUBS.contains(&a.ip()));
    let mode = match mode {
        Mode::Auto if resolved_running && through_resolved => Mode::Resolved,
        Mode::Auto => Mode::ResolvConf,
        Mode::Scoped => bail!("--dns scoped is for macOS and Windows; on Linux use --dns auto"),
        chosen => chosen,
    };
    if mode != Mode::ResolvConf {
        return Ok(HostDns {
            mode,
            upstreams: Vec::new(),
        });
    }
    if content.is_empty() {
        bail!(
            "{} is missing or empty, so there is nothing to add the project's names to; \
             connect with `--dns off` and use the responder directly",
            resolv_conf.display()
        );
    }
    refuse_leftover(resolv_conf, &content, listen.ip())?;
    Ok(HostDns {
        mode,
        upstreams: nameservers(&content, listen.ip()),
    })
}

/// resolv.conf's nameservers, those our rewrite turned off included, without `ours`.
pub fn host_nameservers(ours: IpAddr) -> Vec<SocketAddr> {
    original_nameservers(&fs::read_to_string(RESOLV_CONF).unwrap_or_default(), ours)
}

fn original_nameservers(content: &str, ours: IpAddr) -> Vec<SocketAddr> {
    let enabled: String = content
        .lines()
        .map(|l| l.strip_prefix(DISABLED).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    nameservers(&enabled, ours)
}

fn configure_resolved(responder: SocketAddr, interface: &str) -> Result<()> {
    let [dns, domain, default_route] = resolved_commands(responder, interface);
    resolvectl(&dns)?;
    resolvectl(&domain)?;
    if let Err(e) = resolvectl(&default_route) {
        tracing::debug!(error = %e, "resolvectl default-route is not supported here");
    }
    tracing::info!(%interface, server = %dns[2], "systemd-resolved sends zerops. to the responder");
    Ok(())
}

/// The `resolvectl` calls, in order: the responder as the link's DNS server; `zerops` as its
/// domain (a search domain is also a routing domain: `~zerops` and the bare `api` both work);
/// and no default route, so names outside zerops never reach our link.
fn resolved_commands(responder: SocketAddr, interface: &str) -> [Vec<String>; 3] {
    let server = match responder.port() {
        53 => responder.ip().to_string(),
        _ => responder.to_string(),
    };
    [
        vec!["dns".into(), interface.into(), server],
        vec!["domain".into(), interface.into(), SEARCH_DOMAIN.into()],
        vec!["default-route".into(), interface.into(), "false".into()],
    ]
}

/// Settings on the link vanish with it, so nothing is journaled.
fn resolvectl(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    crate::host::run_tool(
        "resolvectl",
        &args,
        "is systemd-resolved installed? else use `--dns resolv-conf`",
    )
}

/// Backup first, journal second, then the rewrite, in place: the file may be a bind mount
/// (Docker, `ip netns exec`) where renaming over it fails with EBUSY.
fn rewrite_resolv_conf(path: &Path, responder: SocketAddr, journal: &mut Journal) -> Result<()> {
    if responder.port() != 53 {
        bail!("resolv.conf can only name a DNS server on port 53, and the responder is on {responder}");
    }
    let original = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&original);
    refuse_leftover(path, &text, responder.ip())?;
    let backup = backup_path(journal);
    write_synced(&backup, &original, true)?;
    journal.record(Change::File {
        path: path.to_path_buf(),
        backup: backup.clone(),
        marker: Some(MARKER.to_string()),
    })?;
    write_synced(path, rewritten(&text, responder.ip()).as_bytes(), false)?;
    tracing::info!(path = %path.display(), backup = %backup.display(), nameserver = %responder.ip(), "resolv.conf points at the responder");
    Ok(())
}

fn backup_path(journal: &Journal) -> PathBuf {
    journal.path().with_extension("resolv.conf.orig")
}

/// What the watch (`super::watch`) looks after in each mode.
pub enum Watched {
    ResolvConf(ResolvConfWatch),
    Resolved(LinksWatch),
}

/// What another program changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// resolv.conf as it wrote it.
    ResolvConf(Vec<u8>),
    /// Tunnel interfaces whose systemd-resolved settings are gone.
    Links(Vec<String>),
}

pub fn watch(plan: &HostDns, responder: SocketAddr, journal: &Journal) -> Option<Watched> {
    match plan.mode {
        Mode::ResolvConf => Some(Watched::ResolvConf(ResolvConfWatch::new(
            Path::new(RESOLV_CONF),
            backup_path(journal),
            responder.ip(),
        ))),
        Mode::Resolved => Some(Watched::Resolved(LinksWatch::new(
            Path::new("/sys/class/net"),
            Path::new(RESOLVED_LINKS),
            responder,
        ))),
        _ => None,
    }
}

impl Watched {
    /// `links`: the tunnel interfaces of the registered projects.
    pub fn foreign(&mut self, links: &[String]) -> Result<Option<Foreign>> {
        Ok(match self {
            Watched::ResolvConf(w) => w.foreign()?.map(Foreign::ResolvConf),
            Watched::Resolved(w) => Some(w.foreign(links)).filter(|l| !l.is_empty()).map(Foreign::Links),
        })
    }

    pub fn reapply(&mut self, foreign: &Foreign) -> Result<()> {
        match (self, foreign) {
            (Watched::ResolvConf(w), Foreign::ResolvConf(theirs)) => w.reapply(theirs),
            (Watched::Resolved(w), Foreign::Links(links)) => w.reapply(links),
            _ => Ok(()),
        }
    }

    pub fn describe(&self, foreign: &Foreign) -> String {
        match (self, foreign) {
            (Watched::ResolvConf(w), _) => w.path.display().to_string(),
            (Watched::Resolved(_), Foreign::Links(links)) => {
                format!("systemd-resolved's settings of {}", links.join(", "))
            }
            (Watched::Resolved(_), _) => "systemd-resolved's link settings".into(),
        }
    }
}

/// The watch's view of resolv.conf: what corridor last wrote there, and the backup `down`
/// restores from.
pub struct ResolvConfWatch {
    path: PathBuf,
    backup: PathBuf,
    responder: IpAddr,
    ours: Vec<u8>,
}

impl ResolvConfWatch {
    pub(super) fn new(path: &Path, backup: PathBuf, responder: IpAddr) -> ResolvConfWatch {
        // Changed already since the rewrite: the first look finds it foreign.
        let ours = fs::read(path).ok().filter(|b| is_ours(b)).unwrap_or_default();
        ResolvConfWatch {
            path: path.to_path_buf(),
            backup,
            responder,
            ours,
        }
    }

    /// What another program put there since corridor last wrote it, if anything. A version that
    /// still carries the marker and names the responder first is ours edited (a line added by
    /// hand, a copy renamed into place): names still work, and `down` restores the backup over
    /// it.
    pub fn foreign(&mut self) -> Result<Option<Vec<u8>>> {
        let current = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            // Between a program's unlink and its rename: the next look sees the new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        if current == self.ours {
            return Ok(None);
        }
        if is_ours(&current) && first_nameserver(&current) == Some(self.responder) {
            self.ours = current;
            return Ok(None);
        }
        Ok(Some(current))
    }

    /// The other program's version becomes the backup (durably, before the rewrite, as on the
    /// first rewrite), then resolv.conf points at the responder again, in place. Our own version
    /// with another nameserver is no original: the backup stays and is rewritten again.
    pub fn reapply(&mut self, theirs: &[u8]) -> Result<()> {
        let original = if is_ours(theirs) {
            fs::read(&self.backup).with_context(|| format!("reading {}", self.backup.display()))?
        } else {
            replace_synced(&self.backup, theirs)?;
            theirs.to_vec()
        };
        let ours = rewritten(&String::from_utf8_lossy(&original), self.responder);
        write_synced(&self.path, ours.as_bytes(), false)?;
        self.ours = ours.into_bytes();
        Ok(())
    }
}

/// Where systemd-resolved keeps the settings given to each link (by its index) over its bus
/// API, as `resolvectl` gives them; `resolvectl revert` and a network manager's reset remove
/// or rewrite the file. resolved calls it private: read only to notice a reset, after corridor's
/// own settings were seen there, so another format means no watch, never a fight.
const RESOLVED_LINKS: &str = "/run/systemd/resolve/netif";

/// The watch's view of the tunnel links in resolved mode.
pub struct LinksWatch {
    sys_net: PathBuf,
    netif: PathBuf,
    responder: SocketAddr,
    /// Per interface: its index, and whether corridor's settings were seen on it.
    links: Vec<(String, u32, bool)>,
}

impl LinksWatch {
    fn new(sys_net: &Path, netif: &Path, responder: SocketAddr) -> LinksWatch {
        LinksWatch {
            sys_net: sys_net.to_path_buf(),
            netif: netif.to_path_buf(),
            responder,
            links: Vec::new(),
        }
    }

    /// The links among `interfaces` that carried corridor's settings and no longer do. A link
    /// is watched from when its daemon's settings are first seen; a link that is gone (its
    /// connection ending) is nobody's to fix.
    fn foreign(&mut self, interfaces: &[String]) -> Vec<String> {
        let mut lost = Vec::new();
        let mut links = Vec::new();
        for name in interfaces {
            let index = fs::read_to_string(self.sys_net.join(name).join("ifindex"))
                .ok()
                .and_then(|i| i.trim().parse::<u32>().ok());
            let Some(index) = index else { continue };
            let state = fs::read_to_string(self.netif.join(index.to_string())).unwrap_or_default();
            let ours = points_at(&state, self.responder);
            let seen = self.links.iter().any(|(n, i, seen)| n == name && *i == index && *seen);
            if seen && !ours {
                lost.push(name.clone());
            }
            links.push((name.clone(), index, seen || ours));
        }
        self.links = links;
        lost
    }

    fn reapply(&mut self, links: &[String]) -> Result<()> {
        for name in links {
            if let Err(e) = configure_resolved(self.responder, name) {
                // Gone since it was looked at: its connection ended.
                if self.sys_net.join(name).exists() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Whether resolved's saved settings of a link name the responder as its DNS server and
/// `zerops` as a domain.
fn points_at(state: &str, responder: SocketAddr) -> bool {
    let values = |key: &str| -> Vec<String> {
        state
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    // `127.0.0.153`, `127.0.0.153:5353`, either with `%ifindex` or `#server-name`.
    let server = values("SERVERS").iter().any(|s| {
        let s = s.split(['%', '#']).next().unwrap_or_default();
        s.parse::<IpAddr>().is_ok_and(|ip| ip == responder.ip())
            || s.parse::<SocketAddr>().is_ok_and(|a| a == responder)
    });
    let domain = values("DOMAINS")
        .iter()
        .any(|d| d.trim_start_matches('~').trim_end_matches('.') == SEARCH_DOMAIN);
    server && domain
}

fn is_ours(content: &[u8]) -> bool {
    String::from_utf8_lossy(content).contains(MARKER)
}

/// The nameserver glibc asks first.
fn first_nameserver(content: &[u8]) -> Option<IpAddr> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    nameservers(&String::from_utf8_lossy(content), any)
        .first()
        .map(SocketAddr::ip)
}

/// `path` replaced whole or not at all, whenever the machine stops: a torn backup would be
/// restored as the resolver.
fn replace_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let new = PathBuf::from(name);
    let _ = fs::remove_file(&new);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&new)
        .with_context(|| format!("creating {}", new.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", new.display()))?;
    fs::rename(&new, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

fn refuse_leftover(path: &Path, content: &str, ours: IpAddr) -> Result<()> {
    if !content.contains(MARKER) {
        return Ok(());
    }
    bail!(
        "{path} still holds corridor's rewrite from a connection that did not shut down cleanly; \
         run `sudo corridor vpn down` to restore it, or if that finds nothing, edit {path} by hand: \
         delete the line starting `{MARKER_START}`, the line `nameserver {ours}` and the first \
         `search` line, and remove the `{DISABLED}` prefix from the others",
        path = path.display(),
        MARKER_START = &MARKER[..30],
    )
}

/// Our nameserver alone (the responder forwards to the others, and `options rotate` must not
/// send project names past it), `zerops` first in the search list, everything else kept.
fn rewritten(original: &str, responder: IpAddr) -> String {
    // glibc: the last `search` or `domain` line wins.
    let search: Vec<&str> = original
        .lines()
        .rev()
        .find(|l| matches!(keyword(l), "search" | "domain"))
        .map(|l| l.split_whitespace().skip(1).collect())
        .unwrap_or_default();
    let mut domains = vec![SEARCH_DOMAIN];
    domains.extend(search.into_iter().filter(|d| d.trim_end_matches('.') != SEARCH_DOMAIN));

    let mut out = format!("{MARKER}\nnameserver {responder}\nsearch {}\n", domains.join(" "));
    for line in original.lines() {
        if matches!(keyword(line), "nameserver" | "search" | "domain") {
            out.push_str(DISABLED);
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn keyword(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn write_synced(path: &Path, bytes: &[u8], create: bool) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(create)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The host's nameservers in resolv.conf `content`, read by hickory's parser; `skip` (our own
/// address) is never one of them.
fn nameservers(content: &str, skip: IpAddr) -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::parse_resolv_conf(content) else {
        return Vec::new();
    };
    config
        .name_servers()
        .iter()
        .map(|ns| ns.ip)
        .filter(|&ip| ip != skip)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    const ORIGINAL: &str = "# from the ISP\nnameserver 10.0.0.2\nnameserver fd00::2\n\
                            search corp.example lab.example\noptions edns0 trust-ad";
    const LISTEN: &str = "127.0.0.153:53";

    #[test]
    fn rewrite_is_in_place_and_restore_gives_the_original_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, ORIGINAL).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let journal_path = dir.path().join("p.journal");
        let mut journal = Journal::create(&journal_path).unwrap();

        rewrite_resolv_conf(&path, LISTEN.parse().unwrap(), &mut journal).unwrap();
        let rewritten = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = rewritten.lines().collect();

        assert_eq!(
            lines[..3],
            [
                MARKER,
                "nameserver 127.0.0.153",
                "search zerops corp.example lab.example"
            ]
        );
        assert!(lines.contains(&"options edns0 trust-ad"));
        assert!(lines.contains(&"# corridor: nameserver 10.0.0.2"));
        assert_eq!(rewritten.matches("\nnameserver").count(), 1, "{rewritten}");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);

        drop(journal);
        let allowed = crate::host::Allowed::for_os(crate::host::OS).with_file(&path, MARKER, false);
        crate::host::restore_with(&journal_path, &allowed).unwrap();

        assert_eq!(fs::read(&path).unwrap(), ORIGINAL.as_bytes());
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert!(!journal_path.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "the backup is gone too");
    }

    /// resolv.conf rewritten as on `vpn up`, and its watch: (dir, path, journal path, watch).
    fn watched() -> (tempfile::TempDir, PathBuf, PathBuf, ResolvConfWatch) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, ORIGINAL).unwrap();
        let journal_path = dir.path().join("p.journal");
        let mut journal = Journal::create(&journal_path).unwrap();
        rewrite_resolv_conf(&path, LISTEN.parse().unwrap(), &mut journal).unwrap();
        let watch = ResolvConfWatch::new(&path, backup_path(&journal), "127.0.0.153".parse().unwrap());
        (dir, path, journal_path, watch)
    }

    fn restore(dir: &Path, path: &Path, journal: &Path) {
        let allowed = crate::host::Allowed::for_os(crate::host::OS).with_file(path, MARKER, false);
        crate::host::restore_with(journal, &allowed).unwrap();
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "only resolv.conf is left");
    }

    #[test]
    fn a_rewrite_in_place_is_put_back_and_down_restores_the_other_programs_version() {
        let (dir, path, journal, mut watch) = watched();
        let inode = fs::metadata(&path).unwrap().ino();
        assert_eq!(watch.foreign().unwrap(), None, "our own rewrite");

        let dhcp = b"# from DHCP\nnameserver 198.18.0.1\nsearch dhcp.example\n";
        fs::write(&path, dhcp).unwrap();
        let theirs = watch.foreign().unwrap().expect("noticed");
        assert_eq!(theirs, dhcp);
        watch.reapply(&theirs).unwrap();

        let now = fs::read_to_string(&path).unwrap();
        assert!(now.starts_with(MARKER), "{now}");
        assert!(
            now.contains("\nnameserver 127.0.0.153\nsearch zerops dhcp.example\n"),
            "{now}"
        );
        assert!(now.contains("# corridor: nameserver 198.18.0.1"), "{now}");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "in place");
        assert_eq!(watch.foreign().unwrap(), None, "our own rewrite again");

        restore(dir.path(), &path, &journal);
        assert_eq!(
            fs::read(&path).unwrap(),
            dhcp,
            "the newest version, not the one from before up"
        );
    }

    #[test]
    fn a_replacement_by_rename_is_noticed_too() {
        let (dir, path, journal, mut watch) = watched();
        let staged = dir.path().join("resolv.conf.nm");
        let nm = b"# Generated by NetworkManager\nnameserver 198.18.0.9\n";
        fs::write(&staged, nm).unwrap();
        fs::rename(&staged, &path).unwrap();

        let theirs = watch.foreign().unwrap().expect("noticed");
        watch.reapply(&theirs).unwrap();

        assert!(fs::read_to_string(&path).unwrap().contains("nameserver 127.0.0.153"));
        restore(dir.path(), &path, &journal);
        assert_eq!(fs::read(&path).unwrap(), nm);
    }

    #[test]
    fn our_version_edited_is_still_ours_and_a_missing_file_is_waited_for() {
        let (_dir, path, _journal, mut watch) = watched();
        let mut edited = fs::read_to_string(&path).unwrap();
        edited.push_str("options timeout:2\n");
        fs::write(&path, &edited).unwrap();
        assert_eq!(watch.foreign().unwrap(), None);

        fs::remove_file(&path).unwrap();
        assert_eq!(watch.foreign().unwrap(), None);
        fs::write(&path, "nameserver 10.9.9.9\n").unwrap();
        assert!(watch.foreign().unwrap().is_some());
    }

    #[test]
    fn our_version_with_its_nameserver_changed_is_put_back_from_the_backup() {
        let (dir, path, journal, mut watch) = watched();
        let ours = fs::read_to_string(&path).unwrap();
        fs::write(&path, ours.replace("nameserver 127.0.0.153", "nameserver 10.9.9.9")).unwrap();

        let theirs = watch.foreign().unwrap().expect("noticed");
        watch.reapply(&theirs).unwrap();

        assert_eq!(fs::read_to_string(&path).unwrap(), ours);
        restore(dir.path(), &path, &journal);
        assert_eq!(fs::read(&path).unwrap(), ORIGINAL.as_bytes(), "the backup was kept");
    }

    #[test]
    fn a_change_before_the_watch_began_is_foreign_at_the_first_look() {
        let (dir, path, _journal, _) = watched();
        fs::write(&path, "nameserver 10.9.9.9\n").unwrap();

        let mut late = ResolvConfWatch::new(
            &path,
            dir.path().join("p.resolv.conf.orig"),
            "127.0.0.153".parse().unwrap(),
        );

        assert_eq!(late.foreign().unwrap().as_deref(), Some(&b"nameserver 10.9.9.9\n"[..]));
    }

    const RESOLVED_STATE: &str = "# This is private data. Do not parse.\nLLMNR=yes\nMDNS=no\n\
                                  DEFAULT_ROUTE=no\nSERVERS=127.0.0.153\nDOMAINS=zerops\n";

    #[test]
    fn resolveds_saved_link_settings_are_ours_only_with_our_server_and_domain() {
        let ours: SocketAddr = LISTEN.parse().unwrap();

        assert!(points_at(RESOLVED_STATE, ours));
        assert!(points_at("SERVERS=10.0.0.1 127.0.0.153%7#x\nDOMAINS=~zerops.\n", ours));
        assert!(points_at(
            "SERVERS=127.0.0.153:5353\nDOMAINS=zerops\n",
            "127.0.0.153:5353".parse().unwrap()
        ));
        assert!(!points_at("SERVERS=127.0.0.153:5353\nDOMAINS=zerops\n", ours));
        assert!(!points_at("SERVERS=10.0.0.1\nDOMAINS=zerops\n", ours));
        assert!(!points_at("SERVERS=127.0.0.153\nDOMAINS=corp.example\n", ours));
        assert!(!points_at("", ours));
    }

    #[test]
    fn a_link_reset_after_its_settings_were_seen_is_lost_and_a_gone_link_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (sys, netif) = (dir.path().join("sys"), dir.path().join("netif"));
        for (name, index) in [("corridor0", "7"), ("corridor1", "9")] {
            fs::create_dir_all(sys.join(name)).unwrap();
            fs::write(sys.join(name).join("ifindex"), format!("{index}\n")).unwrap();
        }
        fs::create_dir_all(&netif).unwrap();
        let mut watch = LinksWatch::new(&sys, &netif, LISTEN.parse().unwrap());
        let links = ["corridor0".to_string(), "corridor1".to_string()];

        assert!(watch.foreign(&links).is_empty(), "nothing set yet: nothing to lose");
        fs::write(netif.join("7"), RESOLVED_STATE).unwrap();
        assert!(watch.foreign(&links).is_empty());

        fs::remove_file(netif.join("7")).unwrap();
        assert_eq!(watch.foreign(&links), ["corridor0"], "`resolvectl revert corridor0`");
        fs::write(netif.join("7"), "SERVERS=10.0.0.1\n").unwrap();
        assert_eq!(watch.foreign(&links), ["corridor0"], "another program's server");
        fs::write(netif.join("9"), RESOLVED_STATE).unwrap();
        assert_eq!(watch.foreign(&links), ["corridor0"], "corridor1 is fine");

        fs::remove_dir_all(sys.join("corridor0")).unwrap();
        assert!(watch.foreign(&links).is_empty(), "a link that is gone");
        fs::create_dir_all(sys.join("corridor0")).unwrap();
        fs::write(sys.join("corridor0").join("ifindex"), "12\n").unwrap();
        assert!(
            watch.foreign(&links).is_empty(),
            "the name again, a new link not yet set up"
        );
    }

    #[test]
    fn a_domain_line_becomes_part_of_the_search_list() {
        let out = rewritten(
            "domain corp.example\nnameserver 1.1.1.1\n",
            "127.0.0.153".parse().unwrap(),
        );

        assert!(out.contains("\nsearch zerops corp.example\n"), "{out}");
        assert!(out.contains("\n# corridor: domain corp.example\n"), "{out}");
    }

    #[test]
    fn plan_reads_the_upstreams_and_skips_our_own_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, format!("nameserver 127.0.0.153\n{ORIGINAL}")).unwrap();

        let plan = plan_at(&path, Mode::Auto, LISTEN.parse().unwrap(), false).unwrap();

        assert_eq!(plan.mode, Mode::ResolvConf);
        let expected: Vec<SocketAddr> = vec!["10.0.0.2:53".parse().unwrap(), "[fd00::2]:53".parse().unwrap()];
        assert_eq!(plan.upstreams, expected);
    }

    #[test]
    fn resolved_mode_sets_the_link_dns_domain_and_no_default_route() {
        let commands = resolved_commands("127.0.0.153:53".parse().unwrap(), "corridor0");

        assert_eq!(
            commands,
            [
                vec!["dns", "corridor0", "127.0.0.153"],
                vec!["domain", "corridor0", "zerops"],
                vec!["default-route", "corridor0", "false"],
            ]
        );
        let on_a_port = resolved_commands("127.0.0.153:5353".parse().unwrap(), "corridor1");
        assert_eq!(on_a_port[0], ["dns", "corridor1", "127.0.0.153:5353"]);
    }

    #[test]
    fn auto_picks_resolved_only_when_the_host_resolves_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, "nameserver 127.0.0.53\noptions edns0\n").unwrap();
        let listen = LISTEN.parse().unwrap();

        let running = plan_at(&path, Mode::Auto, listen, true).unwrap();
        let not_running = plan_at(&path, Mode::Auto, listen, false).unwrap();
        let forced = plan_at(&path, Mode::Off, listen, true).unwrap();

        assert_eq!(
            running,
            HostDns {
                mode: Mode::Resolved,
                upstreams: vec![]
            }
        );
        assert_eq!(not_running.mode, Mode::ResolvConf);
        assert_eq!(forced.mode, Mode::Off);
    }

    #[test]
    fn the_original_nameservers_are_found_behind_our_rewrite() {
        let ours: IpAddr = "127.0.0.153".parse().unwrap();
        let expected: Vec<SocketAddr> = vec!["10.0.0.2:53".parse().unwrap(), "[fd00::2]:53".parse().unwrap()];

        assert_eq!(original_nameservers(&rewritten(ORIGINAL, ours), ours), expected);
        assert_eq!(original_nameservers(ORIGINAL, ours), expected);
    }

    #[test]
    fn a_leftover_rewrite_is_refused_not_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        fs::write(&path, rewritten(ORIGINAL, "127.0.0.153".parse().unwrap())).unwrap();
        let mut journal = Journal::create(&dir.path().join("p.journal")).unwrap();

        let planned = plan_at(&path, Mode::ResolvConf, LISTEN.parse().unwrap(), false);
        let rewrite = rewrite_resolv_conf(&path, LISTEN.parse().unwrap(), &mut journal);

        assert!(planned.unwrap_err().to_string().contains("did not shut down cleanly"));
        assert!(rewrite.is_err());
        assert!(!journal.path().with_extension("resolv.conf.orig").exists());
    }
}
