//! How commands report: plain text for people, one JSON object with `--json`.
//!
//! Errors always go to stderr as `error[<code>]: <message>`; with `--json` the same
//! error is also printed to stdout as
//! `{"ok":false,"error":{"code":..,"message":..,"exit_status":..}}`.

use serde_json::{json, Value};

use mdevmig::Error;

/// Output mode of a command.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// Print JSON on stdout instead of text.
    pub json: bool,
}

impl Out {
    /// Prints a successful result: `text` for people, `value` for `--json`.
    pub fn ok(&self, text: &str, mut value: Value) {
        if self.json {
            if let Value::Object(m) = &mut value {
                m.insert("ok".into(), Value::Bool(true));
            }
            say(&format!("{value}\n"));
        } else if !text.is_empty() {
            let text = printable(text);
            say(&text);
            if !text.ends_with('\n') {
                say("\n");
            }
        }
    }

    /// Prints an error and returns its exit status.
    pub fn error(&self, e: &Error) -> u8 {
        let status = e.code.exit_status();
        say_err(&format!("error[{}]: {}\n", e.code, printable(&e.message)));
        if self.json {
            say(&format!(
                "{}\n",
                json!({"ok": false, "error": {"code": e.code.as_str(), "message": e.message, "exit_status": status}})
            ));
        }
        status
    }
}

/// Writes to stdout. A closed or broken stdout is not an error of the command
/// (the work is done, perhaps a device already loaded): print! would panic
/// (exit 101), so the write error is dropped here.
pub fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes to stderr, never panicking (see [`say`]).
pub fn say_err(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Text for a terminal: control characters (other than line breaks) and the
/// Unicode controls that reorder or hide text are shown as escapes, never sent,
/// so a string that came from a stream, a descriptor or a file name cannot
/// repaint what a person reads (an "INCOMPATIBLE" turned into "COMPATIBLE").
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let hostile = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().saturating_add(16));
    for c in s.chars() {
        if hostile(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain\nline"), "plain\nline");
        assert_eq!(printable("\u{1b}[2K\rCOMPATIBLE"), "\\u{1b}[2K\\u{d}COMPATIBLE");
        assert_eq!(printable("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(printable("tab\there"), "tab\\u{9}here");
    }
}
