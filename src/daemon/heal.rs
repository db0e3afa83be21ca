//! When the gateway stops answering, the platform is asked why: is this machine's key still
//! registered, and is the project's side (server key, endpoint, networks) still what the
//! connection uses? A removed key is registered again and a changed gateway adopted, without a
//! `down`; a refusal (token, project, permission) is kept for `vpn status` and `doctor` with
//! the command that fixes it.
//!
//! The daemon carries no HTTP client (it stays small): it runs `corridor vpn recheck`, the
//! commands' program beside it, with a [`RecheckRequest`] on stdin, and reads a [`Recheck`] from
//! its stdout. Deciding what an answer means ([`Heal::absorb`]) is pure.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::project_id::ProjectId;

/// How the daemon reaches the platform: the API address and token `vpn up` used.
#[derive(Clone, Serialize, Deserialize)]
pub struct PlatformAccess {
    pub api: String,
    pub token: String,
}

impl fmt::Debug for PlatformAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformAccess")
            .field("api", &self.api)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What `corridor vpn recheck` reads on stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecheckRequest {
    pub access: PlatformAccess,
    pub project_id: ProjectId,
    pub project_name: String,
    /// This machine's public key, base64.
    pub public_key: String,
}

/// What the platform said, as `corridor vpn recheck` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Recheck {
    /// The key is registered; the project's side as the platform answers it now.
    Registered { answer: Answer },
    /// The key was gone from the project and has been registered again.
    Reregistered { answer: Answer },
    /// The platform refused (token, project, permission): what, and the command that fixes it.
    Refused { problem: String, fix: String },
    /// The platform did not answer (or failed); nothing is known.
    Unreachable { problem: String },
}

/// The parts of the platform's answer a running connection depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The gateway's public key, base64.
    pub server_public_key: String,
    pub endpoint: String,
    pub addresses: Vec<IpNet>,
    pub networks: Vec<IpNet>,
}

/// What the connection uses now; compared with each [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub server_public_key: [u8; 32],
    pub endpoint: String,
    pub addresses: Vec<IpNet>,
    pub networks: Vec<IpNet>,
}

/// What the daemon must change after an answer: a new session with this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repoint {
    pub server_public_key: [u8; 32],
    pub endpoint: String,
}

/// The platform's part of `vpn status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlatformStatus {
    /// Times the platform was asked because the gateway stopped answering.
    pub rechecks: u64,
    /// Times this machine's key was registered again after the project lost it.
    pub reregistered: u64,
    /// Times a changed gateway (key, endpoint) was adopted.
    pub gateway_changes: u64,
    /// The latest recovery, as a sentence (`re-registered after the key was removed from the
    /// project`).
    pub note: Option<String>,
    /// What stands in the way now, and its fix; cleared when the gateway answers again.
    pub problem: Option<Problem>,
    pub last_recheck_unix: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// How long the gateway may go unanswered before the platform is asked: longer than a gateway
/// restart takes to heal by forced handshakes alone.
pub const RECHECK_AFTER: Duration = Duration::from_secs(2);
/// Asking again while nothing changes backs off up to this.
const RECHECK_MAX: Duration = Duration::from_secs(60);

/// The daemon's side of rechecks: when to ask, and what an answer changes.
#[derive(Debug, Default)]
pub struct Heal {
    pub status: PlatformStatus,
    /// Answers in a row that changed nothing.
    fruitless: u32,
}

impl Heal {
    /// The gateway answers again: the problem is over.
    pub fn answered(&mut self) {
        self.status.problem = None;
        self.fruitless = 0;
    }

    /// The wait before the next recheck while the gateway stays silent.
    pub fn next_delay(&self) -> Duration {
        RECHECK_AFTER
            .saturating_mul(2u32.saturating_pow(self.fruitless))
            .min(RECHECK_MAX)
    }

    /// Takes in one answer; returns the gateway to start a new session with, if any.
    pub fn absorb(&mut self, current: &Current, recheck: Recheck, project: &str) -> Option<Repoint> {
        self.status.rechecks += 1;
        self.status.last_recheck_unix = Some(now_unix());
        let reconnect = format!("`sudo corridor vpn up {project} --auto-disconnect`");
        let (answer, reregistered) = match recheck {
            Recheck::Registered { answer } => (answer, false),
            Recheck::Reregistered { answer } => (answer, true),
            Recheck::Refused { problem, fix } => {
                self.fruitless += 1;
                self.status.problem = Some(Problem { what: problem, fix });
                return None;
            }
            Recheck::Unreachable { problem } => {
                self.fruitless += 1;
                self.status.problem = Some(Problem {
                    what: format!("the gateway does not answer and the platform cannot be asked why: {problem}"),
                    fix: format!("check this machine's network; corridor keeps trying (or {reconnect})"),
                });
                return None;
            }
        };
        let Ok(server_public_key) = decode_key(&answer.server_public_key) else {
            self.fruitless += 1;
            self.status.problem = Some(Problem {
                what: "the platform answered an invalid gateway key".into(),
                fix: format!("retry later: {reconnect}"),
            });
            return None;
        };
        if answer.addresses != current.addresses || answer.networks != current.networks {
            self.fruitless += 1;
            self.status.problem = Some(Problem {
                what: "the platform changed this connection's addresses or networks".into(),
                fix: format!("reconnect to take them: {reconnect}"),
            });
            return None;
        }
        let gateway_changed = server_public_key != current.server_public_key || answer.endpoint != current.endpoint;
        if !reregistered && !gateway_changed {
            self.fruitless += 1;
            self.status.problem = Some(Problem {
                what: format!(
                    "the platform has this machine's key and the same gateway, yet {} does not answer",
                    current.endpoint
                ),
                fix: format!(
                    "UDP to {} is blocked or the gateway is down: check firewalls, then {reconnect}",
                    current.endpoint
                ),
            });
            return None;
        }
        self.fruitless = 0;
        self.status.problem = None;
        let mut note = Vec::new();
        if reregistered {
            self.status.reregistered += 1;
            note.push("re-registered after the key was removed from the project".to_string());
        }
        if gateway_changed {
            self.status.gateway_changes += 1;
            note.push(format!(
                "adopted the gateway's new key and endpoint {}",
                answer.endpoint
            ));
        }
        self.status.note = Some(note.join("; "));
        Some(Repoint {
            server_public_key,
            endpoint: answer.endpoint,
        })
    }
}

/// Runs `corridor vpn recheck` (the commands' program beside this one) and reads its verdict.
pub async fn ask(request: &RecheckRequest) -> Recheck {
    match run_recheck(request).await {
        Ok(recheck) => recheck,
        Err(e) => Recheck::Unreachable {
            problem: format!("{e:#}"),
        },
    }
}

async fn run_recheck(request: &RecheckRequest) -> Result<Recheck> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(crate::platform::cli_exe()?)
        .args(["vpn", "recheck"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting `corridor vpn recheck`")?;
    let mut stdin = child.stdin.take().context("recheck stdin")?;
    stdin.write_all(&serde_json::to_vec(request)?).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("`corridor vpn recheck` took longer than 30 s")??;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("`corridor vpn recheck` answered nothing usable ({})", out.status))
}

fn decode_key(text: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
    bytes.try_into().ok().context("not 32 bytes")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_registered_again_repoints_to_the_same_gateway_and_says_so() {
        let mut heal = Heal::default();

        let repoint = heal.absorb(&current(), Recheck::Reregistered { answer: answer() }, "demo");

        assert_eq!(
            repoint,
            Some(Repoint {
                server_public_key: [7; 32],
                endpoint: "198.18.0.10:51820".into()
            })
        );
        assert_eq!(
            heal.status.note.as_deref(),
            Some("re-registered after the key was removed from the project")
        );
        assert_eq!((heal.status.reregistered, heal.status.problem), (1, None));
    }

    #[test]
    fn a_rekeyed_gateway_on_a_new_port_is_adopted() {
        let mut heal = Heal::default();
        let moved = Answer {
            server_public_key: key_text([8; 32]),
            endpoint: "198.18.0.10:51999".into(),
            ..answer()
        };

        let repoint = heal.absorb(&current(), Recheck::Registered { answer: moved }, "demo");

        assert_eq!(
            repoint,
            Some(Repoint {
                server_public_key: [8; 32],
                endpoint: "198.18.0.10:51999".into()
            })
        );
        assert_eq!(heal.status.gateway_changes, 1);
        assert!(heal
            .status
            .note
            .unwrap()
            .contains("new key and endpoint 198.18.0.10:51999"));
    }

    #[test]
    fn a_refused_token_is_kept_with_its_fix_and_nothing_changes() {
        let mut heal = Heal::default();
        let refused = Recheck::Refused {
            problem: "the platform refused the token (tokenExpired)".into(),
            fix: "`corridor login --token <token>`".into(),
        };

        assert_eq!(heal.absorb(&current(), refused, "demo"), None);

        let problem = heal.status.problem.clone().unwrap();
        assert!(problem.what.contains("token") && problem.fix.contains("corridor login"));
        assert_eq!(heal.next_delay(), RECHECK_AFTER * 2, "asking again backs off");
        heal.answered();
        assert_eq!(heal.status.problem, None);
        assert_eq!(heal.next_delay(), RECHECK_AFTER);
    }

    #[test]
    fn an_unchanged_answer_blames_the_path_and_new_networks_ask_for_a_reconnect() {
        let mut heal = Heal::default();
        assert_eq!(
            heal.absorb(&current(), Recheck::Registered { answer: answer() }, "demo"),
            None
        );
        assert!(heal
            .status
            .problem
            .as_ref()
            .unwrap()
            .fix
            .contains("UDP to 198.18.0.10:51820 is blocked"));

        let renumbered = Answer {
            networks: vec!["198.19.64.0/26".parse().unwrap()],
            ..answer()
        };
        assert_eq!(
            heal.absorb(&current(), Recheck::Reregistered { answer: renumbered }, "demo"),
            None
        );
        assert!(heal
            .status
            .problem
            .as_ref()
            .unwrap()
            .fix
            .contains("vpn up demo --auto-disconnect"));
        assert_eq!(heal.next_delay(), RECHECK_MAX.min(RECHECK_AFTER * 4));
    }

    fn current() -> Current {
        Current {
            server_public_key: [7; 32],
            endpoint: "198.18.0.10:51820".into(),
            addresses: vec!["198.19.0.66/32".parse().unwrap()],
            networks: vec!["198.19.0.0/26".parse().unwrap(), "198.19.0.64/26".parse().unwrap()],
        }
    }

    fn answer() -> Answer {
        let current = current();
        Answer {
            server_public_key: key_text(current.server_public_key),
            endpoint: current.endpoint,
            addresses: current.addresses,
            networks: current.networks,
        }
    }

    fn key_text(key: [u8; 32]) -> String {
        base64::engine::general_purpose::STANDARD.encode(key)
    }
}
