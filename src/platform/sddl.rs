//! Windows security descriptors in their text form (SDDL), read for one question: could anyone
//! but SYSTEM, the Administrators and this user have written the object? Pure, so it is
//! unit-tested on every host; `platform::windows` reads the descriptor of a real file.

/// The SIDs trusted to write corridor's state: SYSTEM, the Administrators group, and the owner
/// and creator placeholders (which stand for the owner, itself checked).
const TRUSTED: [&str; 6] = ["SY", "S-1-5-18", "BA", "S-1-5-32-544", "OW", "CO"];

/// Access bits that let a holder change a file or add one to a directory: write and append
/// data (add file, add subdirectory), write attributes and extended attributes, delete a child,
/// delete, write the DACL or the owner, and the generic and maximum-allowed forms.
const WRITE: u32 =
    0x2 | 0x4 | 0x10 | 0x40 | 0x100 | 0x1_0000 | 0x4_0000 | 0x8_0000 | 0x0200_0000 | 0x1000_0000 | 0x4000_0000;

/// The DACL of corridor's system directories: SYSTEM and the Administrators only, protected
/// from what the parent (`%ProgramData%`, where users may create files) would pass down;
/// `shared` lets users read (the runtime dir, where they find connections).
pub fn private_dir(shared: bool) -> String {
    let users = if shared { "(A;OICI;0x1200a9;;;BU)" } else { "" };
    format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA){users}")
}

/// Why an object with descriptor `sddl` may hold what someone other than SYSTEM, the
/// Administrators or `me` (a SID string) wrote: another owner, or an allow entry that grants
/// write access to anyone else. Inherit-only entries count too: they reach files made later.
pub fn check(sddl: &str, me: &str) -> Result<(), String> {
    let trusted = |sid: &str| TRUSTED.contains(&sid) || sid.eq_ignore_ascii_case(me);
    let owner = section(sddl, 'O').ok_or("no owner")?;
    if !trusted(owner) {
        return Err(format!("owned by {owner}"));
    }
    let dacl = section(sddl, 'D').ok_or("no access list (everyone may write)")?;
    let aces = dacl.split('(').skip(1).map(|ace| ace.trim_end_matches(')'));
    for ace in aces {
        let fields: Vec<&str> = ace.split(';').collect();
        let [kind, _flags, rights, _, _, sid, ..] = fields[..] else {
            return Err(format!("an unreadable access entry ({ace})"));
        };
        // Deny entries and audit entries only take away.
        if !matches!(kind, "A" | "OA" | "XA" | "ZA") {
            continue;
        }
        if rights_mask(rights) & WRITE != 0 && !trusted(sid) {
            return Err(format!("{sid} may write it ({ace})"));
        }
    }
    Ok(())
}

/// The text after `O:`, `G:` or `D:` up to the next section.
fn section(sddl: &str, tag: char) -> Option<&str> {
    let at = ["O:", "G:", "D:", "S:"]
        .iter()
        .filter_map(|t| sddl.find(t))
        .collect::<Vec<_>>();
    let start = sddl.find(&format!("{tag}:"))? + 2;
    let end = at.into_iter().filter(|&i| i + 2 > start).min().unwrap_or(sddl.len());
    Some(&sddl[start..end])
}

/// The access mask of an entry's rights: hexadecimal, or two-letter codes; an unknown code
/// counts as every right.
fn rights_mask(rights: &str) -> u32 {
    if let Some(hex) = rights.strip_prefix("0x").or_else(|| rights.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).unwrap_or(u32::MAX);
    }
    let bytes = rights.as_bytes();
    bytes
        .chunks(2)
        .map(|code| match code {
            b"GA" => 0x1000_0000,
            b"GR" => 0x8000_0000,
            b"GW" => 0x4000_0000,
            b"GX" => 0x2000_0000,
            b"FA" => 0x1f_01ff,
            b"FR" => 0x12_0089,
            b"FW" => 0x12_0116,
            b"FX" => 0x12_00a9,
            b"KA" => 0xf_003f,
            b"KR" | b"KX" => 0x2_0019,
            b"KW" => 0x2_0006,
            b"SD" => 0x1_0000,
            b"RC" => 0x2_0000,
            b"WD" => 0x4_0000,
            b"WO" => 0x8_0000,
            b"CC" => 0x1,
            b"DC" => 0x2,
            b"LC" => 0x4,
            b"SW" => 0x8,
            b"RP" => 0x10,
            b"WP" => 0x20,
            b"DT" => 0x40,
            b"LO" => 0x80,
            b"CR" => 0x100,
            _ => u32::MAX,
        })
        .fold(0, |mask, bits| mask | bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "S-1-5-21-1-2-3-1001";

    #[test]
    fn corridors_own_directories_pass() {
        for shared in [false, true] {
            let sddl = format!("O:BA{}", private_dir(shared));
            assert_eq!(check(&sddl, ME), Ok(()), "{sddl}");
        }
        assert_eq!(
            check(&format!("O:{ME}D:P(A;OICI;FA;;;{ME})(A;;FA;;;SY)"), ME),
            Ok(()),
            "a profile's"
        );
        assert!(private_dir(true).contains("0x1200a9;;;BU"), "users read and list only");
    }

    #[test]
    fn program_datas_inherited_access_is_refused() {
        // %ProgramData%'s own DACL: users may create files and folders in it.
        let program_data =
            "O:SYG:SYD:P(A;OICIIO;GA;;;CO)(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1200a9;;;BU)(A;CI;DCLCRPCR;;;BU)";

        assert_eq!(
            check(program_data, ME),
            Err("BU may write it (A;CI;DCLCRPCR;;;BU)".into())
        );
    }

    #[test]
    fn other_owners_and_writers_are_refused() {
        assert_eq!(
            check("O:S-1-5-21-9-9-9-1002D:P(A;;FA;;;SY)", ME),
            Err("owned by S-1-5-21-9-9-9-1002".into())
        );
        assert!(check("O:BAD:(A;;0x2;;;WD)", ME).is_err(), "Everyone may add a file");
        assert!(check("O:BAD:(A;;GW;;;AU)", ME).is_err());
        assert!(
            check("O:BAD:(A;;ZZ;;;AU)", ME).is_err(),
            "an unknown right counts as all"
        );
        assert!(check("O:BA", ME).is_err(), "no DACL is full access for all");
        assert_eq!(
            check("O:BAD:(D;;FA;;;WD)(A;;FR;;;WD)", ME),
            Ok(()),
            "denials and reads are fine"
        );
    }
}
