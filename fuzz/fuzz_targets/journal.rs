//! The journal parser and replay planner on arbitrary bytes: never a panic, and nothing planned
//! for undoing that corridor could not have made (`cargo fuzz run journal corpus/journal seeds/journal` in fuzz/).
#![no_main]

use std::path::Path;

use corridor::host::{self, plan::Os, Allowed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    let journal = Path::new("/var/lib/corridor/p1.journal");
    for os in [Os::Linux, Os::MacOs, Os::Windows] {
        let allowed = Allowed::for_os(os);
        // Every interface seems to carry this journal's tag, the most permissive host.
        let tag_of = |_: &str| Some("corridor:p1:0123456789abcdef".to_string());
        let replay = host::plan_replay(journal, text, &allowed, &tag_of);
        let verdicts = allowed.check(journal, &replay.undo.iter().rev().cloned().collect::<Vec<_>>());
        assert!(verdicts.iter().all(Result::is_ok), "{:?} planned on {os:?}", replay.undo);
    }
});
