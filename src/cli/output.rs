//! How commands report: plain text for people, one JSON object with `--json`.
//!
//! Errors always go to stderr as `error[<code>]: <message>`; with `--json` the same
//! error is also printed to stdout as
//! `{"ok":false,"error":{"code":..,"message":..,"exit_status":..}}`.

use serde_json::{json, Value};

use crate::error::Error;

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
            println!("{value}");
        } else if !text.is_empty() {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }

    /// Prints an error and returns its exit status.
    pub fn error(&self, e: &Error) -> u8 {
        let status = e.code.exit_status();
        eprintln!("error[{}]: {}", e.code, e.message);
        if self.json {
            println!(
                "{}",
                json!({"ok": false, "error": {"code": e.code.as_str(), "message": e.message, "exit_status": status}})
            );
        }
        status
    }
}
