//! `vpn key list`, `vpn key remove`, `vpn clear` and `vpn config`: their arguments and what
//! they print.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::account::ApiSettings;
use crate::store::KeyRole;
use crate::vpn_keys::{
    self, ConfigOptions, ConfigOutput, KeptBecause, KeyEntry, KeyListing, Removal, Removed, Selection,
};

use super::{step, Terminal};

#[derive(Subcommand)]
pub enum Key {
    /// Every key registered for the project; this machine's marked with what each serves.
    List {
        /// Project name or id.
        project: Option<String>,
        #[arg(short = 'P', long = "project-id")]
        project_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove keys from the project (and this machine's key files): [PROJECT] KEY...
    Remove(RemoveArgs),
}

#[derive(Args, Clone)]
pub struct RemoveArgs {
    /// An optional project name or id, then the public keys to remove (as `vpn key list`
    /// shows them).
    #[arg(value_name = "[PROJECT] KEY")]
    pub args: Vec<String>,
    #[arg(short = 'P', long = "project-id")]
    pub project_id: Option<String>,
    /// This machine's keys that no running connection or rootless process uses (not the key
    /// of `vpn config`: the device that imported the configuration uses it).
    #[arg(long)]
    pub mine_unused: bool,
    /// Remove keys in use too: a running connection is ended first, as `vpn down` would.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// Project name or id.
    pub project: Option<String>,
    #[arg(short = 'P', long = "project-id")]
    pub project_id: Option<String>,
    /// Where to write it; `-` for standard output (default: <config dir>/wireguard/<project>.conf,
    /// or nowhere with --qr).
    #[arg(short = 'o', long = "output", value_name = "FILE|-")]
    pub output: Option<String>,
    /// Tunnel MTU.
    #[arg(long, default_value_t = 1420, value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub mtu: u16,
    /// Leave out the DNS line (the project's DNS server and the `zerops` search domain).
    #[arg(long)]
    pub skip_dns_setup: bool,
    /// Persistent keepalive, seconds.
    #[arg(long, default_value_t = 25)]
    pub keepalive: u16,
    /// Show it as a QR code in the terminal, for the WireGuard apps on phones.
    #[arg(long)]
    pub qr: bool,
}

pub async fn key(api: ApiSettings, command: Key, term: &mut Terminal) -> Result<()> {
    match command {
        Key::List {
            project,
            project_id,
            json,
        } => {
            let listing = vpn_keys::list(api, project_id.or(project).as_deref(), term).await?;
            print_listing(&listing, json)
        }
        Key::Remove(args) => {
            let (project, keys) = args.project_and_keys();
            let selection = match (args.mine_unused, keys.is_empty()) {
                (true, true) => Selection::MineUnused,
                (true, false) => anyhow::bail!("give keys or --mine-unused, not both"),
                (false, true) => anyhow::bail!(
                    "nothing to remove: give the public keys (`corridor vpn key list` shows them), or --mine-unused"
                ),
                (false, false) => Selection::Keys(keys),
            };
            let removal = vpn_keys::remove(api, project.as_deref(), selection, args.force, term).await?;
            print_removal(&removal);
            Ok(())
        }
    }
}

/// `vpn clear`: every key of this machine's for the project, listed.
pub async fn clear(api: ApiSettings, project: Option<&str>, term: &mut Terminal) -> Result<()> {
    let removal = vpn_keys::remove(api, project, Selection::AllMine, false, term).await?;
    print_removal(&removal);
    Ok(())
}

pub async fn config(api: ApiSettings, args: ConfigArgs, term: &mut Terminal) -> Result<()> {
    let output = match args.output.as_deref() {
        Some("-") => ConfigOutput::Text,
        Some(path) => ConfigOutput::File(PathBuf::from(path)),
        None if args.qr => ConfigOutput::Text,
        None => ConfigOutput::Default,
    };
    let to_stdout = args.output.as_deref() == Some("-");
    let options = ConfigOptions {
        project: args.project_id.or(args.project),
        output,
        mtu: args.mtu,
        skip_dns: args.skip_dns_setup,
        keepalive_secs: args.keepalive,
    };
    let written = vpn_keys::config(api, options, term).await?;
    step(&format!(
        "key {} registered with {} for this configuration",
        written.public_key, written.project
    ));
    if let Some(path) = &written.path {
        step(&format!(
            "WireGuard configuration written to {} (mode 0600)",
            path.display()
        ));
    }
    if to_stdout {
        print!("{}", written.text);
    }
    if args.qr {
        println!("{}", qr(&written.text)?);
    }
    Ok(())
}

impl RemoveArgs {
    /// `[PROJECT] KEY...`: the first word is the project unless it is a key or -P names one.
    fn project_and_keys(&self) -> (Option<String>, Vec<String>) {
        if self.project_id.is_some() {
            return (self.project_id.clone(), self.args.clone());
        }
        match self.args.split_first() {
            Some((first, rest)) if crate::keys::decode(first).is_none() => (Some(first.clone()), rest.to_vec()),
            _ => (None, self.args.clone()),
        }
    }
}

fn print_listing(listing: &KeyListing, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(listing)?);
        return Ok(());
    }
    let project = &listing.project;
    if listing.keys.is_empty() {
        println!("no keys registered with {} ({})", project.name, project.id);
        return Ok(());
    }
    let mine = listing.keys.iter().filter(|k| k.this_machine).count();
    println!(
        "{} ({}): {} keys registered, {mine} of them this machine's",
        project.name,
        project.id,
        listing.keys.len()
    );
    for key in &listing.keys {
        println!("  {}", entry_line(key));
    }
    Ok(())
}

fn entry_line(key: &KeyEntry) -> String {
    let owner = match &key.mine {
        None => "another machine".to_owned(),
        Some(mine) => {
            let state = match (mine.role, mine.in_use) {
                (KeyRole::Connection, true) => ", connected",
                (KeyRole::Connection, false) => ", not connected",
                (KeyRole::Rootless { .. }, true) => ", in use",
                (KeyRole::Rootless { .. }, false) => ", unused",
                (KeyRole::Config, _) => "",
            };
            format!("this machine: {}{state}", role_name(mine.role))
        }
    };
    let mut line = format!("{}  {owner}", key.public_key);
    if !key.addresses.is_empty() {
        line.push_str(&format!("  [{}]", key.addresses.join(", ")));
    }
    if let Some(at) = &key.registered_at {
        line.push_str(&format!("  registered {at}"));
    }
    line
}

fn role_name(role: KeyRole) -> String {
    match role {
        KeyRole::Connection => "vpn up".to_owned(),
        KeyRole::Rootless { slot } => format!("rootless slot {slot} (forward, connect, proxy)"),
        KeyRole::Config => "vpn config".to_owned(),
    }
}

fn print_removal(removal: &Removal) {
    if removal.removed.is_empty() {
        println!("nothing removed");
    }
    for removed in &removal.removed {
        println!("removed {} ({})", removed.public_key, removed_what(removed));
    }
    for kept in &removal.kept {
        let why = match kept.reason {
            KeptBecause::ConnectionRunning => "its connection runs",
            KeptBecause::ProcessRunning => "its process runs",
            KeptBecause::ConfigExported => "an exported configuration uses it; remove it by name",
        };
        println!("kept {} ({}: {why})", kept.public_key, role_name(kept.role));
    }
}

fn removed_what(removed: &Removed) -> String {
    let platform = match removed.was_registered {
        true => "from the platform",
        false => "was not registered",
    };
    match (removed.role, &removed.file) {
        (Some(role), Some(file)) => format!("this machine's {}: {platform}, {}", role_name(role), file.display()),
        _ => format!("another machine's: {platform}"),
    }
}

/// The text as a QR code of block characters, light on dark, as the WireGuard apps scan it
/// from a terminal.
fn qr(text: &str) -> Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).context("the configuration is too long for a QR code")?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_is_the_project_unless_it_is_a_key() {
        let key = crate::keys::encode(&[1; 32]);
        let args = |words: &[&str], project_id: Option<&str>| RemoveArgs {
            args: words.iter().map(|w| w.to_string()).collect(),
            project_id: project_id.map(str::to_owned),
            mine_unused: false,
            force: false,
        };

        assert_eq!(
            args(&["demo", &key], None).project_and_keys(),
            (Some("demo".into()), vec![key.clone()])
        );
        assert_eq!(args(&[&key], None).project_and_keys(), (None, vec![key.clone()]));
        assert_eq!(
            args(&["demo"], Some("p1")).project_and_keys(),
            (Some("p1".into()), vec!["demo".to_owned()])
        );
    }

    #[test]
    fn a_configuration_fits_a_qr_code() {
        let text = "[Interface]\nPrivateKey = x\n".repeat(12);

        let code = qr(&text).unwrap();

        assert!(code.lines().count() > 20, "{code}");
    }
}
