//! `corridor regions`: the platform's region list.

use crate::api::Region;

pub fn print(regions: &[Region], json: bool) {
    if json {
        println!("{}", serde_json::json!({ "regions": regions }));
        return;
    }
    for r in regions {
        let default = if r.is_default { " (default)" } else { "" };
        println!("{:<12} {}{default}", r.name, r.address);
    }
}
