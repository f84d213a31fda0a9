//! Every code in the source is in `codes::TABLE`, once, with a meaning.

use std::collections::BTreeSet;

use mdevmig_xe::codes::TABLE;

const SOURCES: &[&str] = &[
    include_str!("../src/codes.rs"),
    include_str!("../src/format.rs"),
    include_str!("../src/profile.rs"),
    include_str!("../src/validate.rs"),
    include_str!("../src/lib.rs"),
    include_str!("../src/testing.rs"),
    include_str!("../src/pagegen.rs"),
    include_str!("../src/sim.rs"),
    include_str!("../src/plugin.rs"),
];

#[test]
fn table_is_complete_and_unique() {
    let table: BTreeSet<&str> = TABLE.iter().map(|(c, _)| *c).collect();
    assert_eq!(table.len(), TABLE.len(), "a code is listed twice");
    for (code, meaning) in TABLE {
        assert!(code.starts_with("vendor."), "{code}");
        assert!(!meaning.is_empty() && !meaning.contains('\n'), "{code}");
    }
    for src in SOURCES {
        for (i, _) in src.match_indices("\"vendor.xe.") {
            let rest = &src[i + 1..];
            let code = &rest[..rest.find('"').unwrap()];
            assert!(table.contains(code), "{code} is not in codes::TABLE");
        }
    }
}
