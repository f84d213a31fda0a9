//! `spec/qmp.md` and the service agree: every error code the service has is in
//! the spec's table with the same meaning, and every command is documented.

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/qmp.md")).unwrap()
}

#[test]
fn every_service_error_code_is_in_the_spec_with_its_meaning_and_no_other() {
    let spec = spec();
    let table: Vec<(String, String)> = spec
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("| `qmp.")?;
            let (code, rest) = l.split_once("` | ")?;
            Some((format!("qmp.{code}"), rest.trim_end_matches(" |").to_string()))
        })
        .collect();
    let codes: Vec<(String, String)> = mdevmig_serve::CODES
        .iter()
        .map(|(c, m)| (c.to_string(), m.to_string()))
        .collect();
    assert_eq!(
        table, codes,
        "spec/qmp.md section 7 and serve/src/errors.rs differ"
    );
}

#[test]
fn every_command_is_documented() {
    let spec = spec();
    for name in mdevmig_serve::command_names() {
        assert!(
            spec.contains(&format!("| `{name}` |")),
            "{name} is not in spec/qmp.md's command tables"
        );
    }
}
