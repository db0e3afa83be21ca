//! Saved sessions for PuTTY and WinSCP, one per alias of [`Inventory::aliases`], named
//! `corridor-<project>-<alias>`: a `.reg` file for PuTTY on Windows, PuTTY's session files for
//! its Unix tools (`plink -load`, `psftp -load`), and a `WinSCP.ini` sessions section.
//!
//! Names are escaped as the tools escape them themselves (PuTTY's `escape_registry_key` in
//! `windows/storage.c` and `mungestr` in `unix/storage.c`; WinSCP's `MungeStr`, which is the
//! registry escaping of the name's UTF-8 with a byte-order mark in front when it is not ASCII).

use std::path::{Path, PathBuf};

use super::{Inventory, SSH_PORT, SSH_USER};

/// One saved session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The name the user sees and passes to `-load`.
    pub name: String,
    pub host: String,
}

/// The registry key PuTTY keeps its sessions under.
pub const PUTTY_SESSIONS_KEY: &str = r"HKEY_CURRENT_USER\Software\SimonTatham\PuTTY\Sessions";
/// WinSCP's transfer protocol setting: `fsSFTPonly` (SFTP without falling back to SCP).
pub const WINSCP_FS_PROTOCOL_SFTP: u32 = 2;

pub fn sessions(inventory: &Inventory) -> Vec<Session> {
    inventory
        .aliases()
        .into_iter()
        .map(|a| Session {
            name: format!("corridor-{}-{}", inventory.project.name, a.alias),
            host: a.host,
        })
        .collect()
}

/// A `.reg` file (as text; [`utf16_with_bom`] gives the bytes regedit expects) that imports
/// the sessions into PuTTY on Windows.
pub fn putty_reg(sessions: &[Session]) -> String {
    let mut out = String::from("Windows Registry Editor Version 5.00\r\n");
    for s in sessions {
        out.push_str(&format!(
            "\r\n[{PUTTY_SESSIONS_KEY}\\{}]\r\n\"HostName\"=\"{}\"\r\n\"PortNumber\"=dword:{SSH_PORT:08x}\r\n\"Protocol\"=\"ssh\"\r\n\"UserName\"=\"{}\"\r\n",
            putty_registry_key(&s.name),
            reg_string(&s.host),
            reg_string(SSH_USER)
        ));
    }
    out
}

/// PuTTY's Unix session file: `key=value` lines, integers in decimal.
pub fn putty_session_file(session: &Session) -> String {
    format!(
        "HostName={}\nPortNumber={SSH_PORT}\nProtocol=ssh\nUserName={SSH_USER}\n",
        session.host
    )
}

/// Where PuTTY's Unix tools look for a saved session: `$PUTTYDIR/sessions/`, else
/// `~/.putty/sessions/`, under the escaped name.
pub fn putty_session_path(putty_dir: &Path, session: &Session) -> PathBuf {
    putty_dir.join("sessions").join(putty_file_name(&session.name))
}

/// Sessions for WinSCP, to paste into (or import from) `WinSCP.ini`.
pub fn winscp_ini(sessions: &[Session]) -> String {
    let mut out = String::new();
    for s in sessions {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&format!(
            "[Sessions\\{}]\r\nHostName={}\r\nPortNumber={SSH_PORT}\r\nUserName={}\r\nFSProtocol={WINSCP_FS_PROTOCOL_SFTP}\r\n",
            winscp_munge(&s.name),
            winscp_munge(&s.host),
            winscp_munge(SSH_USER)
        ));
    }
    out
}

/// PuTTY on Windows: `%XX` for space, `\`, `*`, `?`, `%`, control and non-ASCII bytes, and a
/// leading `.`.
pub fn putty_registry_key(name: &str) -> String {
    escape(name.as_bytes(), registry_escapes)
}

/// PuTTY on Unix: `%XX` for every byte but letters, digits and `+ - . @ _`.
pub fn putty_file_name(name: &str) -> String {
    escape(name.as_bytes(), |_, b| {
        !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'@' | b'_'))
    })
}

/// WinSCP: the registry escaping, of the UTF-8 bytes behind a byte-order mark when not ASCII.
pub fn winscp_munge(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len() + 3);
    if !text.is_ascii() {
        bytes.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
    }
    bytes.extend_from_slice(text.as_bytes());
    escape(&bytes, registry_escapes)
}

/// What regedit reads: UTF-16LE with a byte-order mark.
pub fn utf16_with_bom(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

/// Whether PuTTY's `escape_registry_key` escapes byte `b` at position `i`.
fn registry_escapes(i: usize, b: u8) -> bool {
    matches!(b, b' ' | b'\\' | b'*' | b'?' | b'%') || !(b' '..=b'~').contains(&b) || (b == b'.' && i == 0)
}

fn escape(bytes: &[u8], needs: impl Fn(usize, u8) -> bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        if needs(i, b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A `.reg` string value: backslash and quote escaped.
fn reg_string(text: &str) -> String {
    text.replace('\\', r"\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn putty_escapes_registry_keys_like_putty() {
        assert_eq!(putty_registry_key("corridor-demo-api"), "corridor-demo-api");
        assert_eq!(putty_registry_key("a b\\c*d?e%f"), "a%20b%5Cc%2Ad%3Fe%25f");
        assert_eq!(putty_registry_key(".x.y"), "%2Ex.y");
        assert_eq!(putty_registry_key("é\t~"), "%C3%A9%09~");
    }

    #[test]
    fn putty_escapes_unix_file_names_like_putty() {
        assert_eq!(
            putty_file_name("corridor-demo-node1.db.db.zerops"),
            "corridor-demo-node1.db.db.zerops"
        );
        assert_eq!(putty_file_name("my app/x:y@z+1_2"), "my%20app%2Fx%3Ay@z+1_2");
        assert_eq!(putty_file_name(".hidden"), ".hidden");
    }

    #[test]
    fn winscp_marks_non_ascii_names_with_a_bom() {
        assert_eq!(winscp_munge("corridor-demo-api"), "corridor-demo-api");
        assert_eq!(winscp_munge("C:\\key.ppk"), "C:%5Ckey.ppk");
        assert_eq!(winscp_munge("é"), "%EF%BB%BF%C3%A9");
    }

    #[test]
    fn reg_files_are_utf16_with_a_bom() {
        assert_eq!(utf16_with_bom("A"), [0xFF, 0xFE, b'A', 0]);
        assert_eq!(reg_string(r#"a\b"c"#), r#"a\\b\"c"#);
    }
}
