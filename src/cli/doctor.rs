//! `corridor doctor`: its arguments and its report, a line per check or JSON.

use anyhow::{bail, Result};
use clap::Args;

use crate::account::ApiSettings;
use crate::doctor::{self, Check};

#[derive(Args)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
}

pub async fn doctor(api: ApiSettings, args: DoctorArgs) -> Result<()> {
    let checks = doctor::run(api).await?;
    let failed = checks.iter().filter(|c| !c.ok).count();
    if args.json {
        println!("{}", serde_json::json!({ "ok": failed == 0, "checks": checks }));
    } else {
        print_checks(&checks);
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn print_checks(checks: &[Check]) {
    for c in checks {
        match &c.fix {
            None => println!("✓ {}: {}", c.name, c.detail),
            Some(fix) => println!("✗ {}: {} → fix: {fix}", c.name, c.detail),
        }
    }
}
