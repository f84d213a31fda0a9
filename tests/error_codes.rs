//! Pins `spec/errors.md` to the codes in `src/error.rs`: same set, same meanings,
//! same exit statuses.

use std::collections::BTreeMap;

use mdevmig::Code;

fn documented() -> (BTreeMap<String, String>, BTreeMap<String, u8>) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spec/errors.md")).unwrap();
    let mut codes = BTreeMap::new();
    let mut groups = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `code` | meaning |" or "| `group` | exit | meaning |"
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let name = cells[1].trim_matches('`').to_string();
        if name.contains('.') {
            assert!(
                codes.insert(name.clone(), cells[2].to_string()).is_none(),
                "{name} listed twice"
            );
        } else {
            groups.insert(name, cells[2].parse().unwrap());
        }
    }
    (codes, groups)
}

#[test]
fn every_code_is_documented_with_its_meaning() {
    let (doc, _) = documented();
    for (code, s, meaning) in Code::TABLE {
        assert_eq!(code.as_str(), *s);
        assert_eq!(
            doc.get(*s).map(String::as_str),
            Some(*meaning),
            "spec/errors.md row for {s}"
        );
    }
}

#[test]
fn every_documented_code_exists() {
    let (doc, _) = documented();
    let plugin: Vec<&str> = mdevmig::plugins::all_error_codes()
        .iter()
        .map(|(c, _)| *c)
        .collect();
    for code in doc.keys() {
        assert!(
            Code::from_str_code(code).is_some() || plugin.contains(&code.as_str()),
            "spec/errors.md lists {code}, which no code defines"
        );
    }
}

#[test]
fn plugin_codes_are_documented() {
    let (doc, _) = documented();
    for (code, meaning) in mdevmig::plugins::all_error_codes() {
        let (code, meaning): (&str, &str) = (code, meaning);
        assert!(code.starts_with("vendor."), "{code}");
        assert_eq!(
            doc.get(code).map(String::as_str),
            Some(meaning),
            "spec/errors.md row for {code}"
        );
    }
}

#[test]
fn exit_statuses_follow_the_group_table() {
    let (_, groups) = documented();
    for (code, s, _) in Code::TABLE {
        let group = s.split('.').next().unwrap();
        assert_eq!(groups[group], code.exit_status(), "{s}");
    }
    assert_eq!(groups["vendor"], Code::Vendor("vendor.x.y").exit_status());
}
