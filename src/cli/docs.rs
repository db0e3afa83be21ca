//! Shell completions and the man page, generated from the clap definitions so they never drift
//! from the commands.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use super::Cli;

pub use clap_complete::Shell;

/// The completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "corridor", out);
}

/// The man page, corridor(1), in roff: every subcommand in one page.
pub fn man_page(out: &mut dyn Write) -> Result<()> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    render_subcommands(&command, "corridor", out)?;
    man.render_version_section(out)?;
    Ok(())
}

/// One section per command (`corridor vpn up`, …), with its options: `render_subcommands_section`
/// names only the first level.
fn render_subcommands(command: &clap::Command, path: &str, out: &mut dyn Write) -> Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            render_subcommands(sub, &name, out)?;
            continue;
        }
        let sub = sub.clone().bin_name(name.clone());
        let man = clap_mangen::Man::new(sub);
        let mut section = Vec::new();
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        // Description and options become subsections of the command's section.
        let section = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        write!(out, ".SH \"{}\"\n{section}", name.to_uppercase())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            for command in ["ssh-config", "vpn", "export"] {
                assert!(text.contains(command), "{shell:?} completion lacks {command}");
            }
        }
    }

    #[test]
    fn the_man_page_has_every_command() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(".ie"), "roff: {}", &text[..40]);
        for section in [
            "CORRIDOR VPN UP",
            "CORRIDOR SSH",
            "CORRIDOR EXPORT PUTTY",
            "CORRIDOR LS",
        ] {
            assert!(text.contains(&format!(".SH \"{section}\"")), "no section {section}");
        }
        assert!(!text.contains("CORRIDOR DAEMON"), "hidden commands stay out");
    }
}
