//! The service's own error codes, and QMP error replies.
//!
//! A refused command is answered `{"error": {"class", "desc", "code"}}`: `class`
//! is a QMP error class (`GenericError` or `CommandNotFound`, as QEMU's
//! `qapi/error.json` names them), `desc` is `error[<code>]: <message>` (the
//! CLI's stderr line), and `code` the stable code alone. Codes from the broker
//! (`compat.*`, `auth.*`, `device.*`, ...) are listed in `spec/errors.md`; the
//! service's own, below, in `spec/qmp.md`, and a test pins the two lists together.

use serde_json::{json, Value};

/// The service's own codes and what each means.
pub const CODES: &[(&str, &str)] = &[
    ("qmp.bad_json", "a message is not a JSON object"),
    (
        "qmp.message_too_large",
        "a message is longer than the service's limit",
    ),
    ("qmp.too_deep", "a message nests deeper than the service's limit"),
    (
        "qmp.bad_message",
        "a message is an object but not a valid command (no `execute`, an unexpected member, `exec-oob`)",
    ),
    (
        "qmp.no_capabilities",
        "a command other than qmp_capabilities came before capabilities negotiation",
    ),
    (
        "qmp.already_negotiated",
        "qmp_capabilities came after negotiation was complete",
    ),
    ("qmp.unknown_command", "the command does not exist"),
    (
        "qmp.bad_arguments",
        "the arguments are missing, of the wrong type, or unexpected",
    ),
    (
        "qmp.access_denied",
        "the access policy does not let the peer's uid or gid run the command",
    ),
    (
        "qmp.too_many",
        "a per-connection or global limit is reached (clients, jobs, fds, devices)",
    ),
    (
        "qmp.no_such_fd",
        "no fd was received for getfd, or no fd has the name given",
    ),
    ("qmp.no_such_job", "no job has the id given"),
    (
        "qmp.job_state",
        "the job is not in a state that allows the command",
    ),
    (
        "qmp.no_such_device",
        "no configured device or open region has the name given",
    ),
    (
        "qmp.device_busy",
        "the device is used by a running job or an open region",
    ),
    (
        "qmp.shutting_down",
        "the service is draining after SIGTERM and takes no new work",
    ),
    (
        "qmp.bad_session",
        "the session nonce was not issued by this service, expired, or was used already",
    ),
    (
        "qmp.no_key",
        "the service was started without the signing key or trust store the command needs",
    ),
    (
        "qmp.bad_path",
        "a file name is not a plain name inside the service's state directory",
    ),
    (
        "qmp.cancelled",
        "the job was cancelled, or its client went away; the device was put back",
    ),
    (
        "qmp.timeout",
        "a started message was not completed, or the connection was idle, for longer than the service's limit; the connection is closed",
    ),
];

/// A refused command: QMP class, stable code, message.
#[derive(Debug, Clone)]
pub struct QErr {
    /// QMP error class.
    pub class: &'static str,
    /// Stable dotted code.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

impl QErr {
    /// A `GenericError` with one of the service's codes.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(CODES.iter().any(|(c, _)| *c == code), "undocumented code {code}");
        QErr {
            class: "GenericError",
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// The `error` member of a reply.
    pub fn to_json(&self) -> Value {
        json!({
            "class": self.class,
            "desc": format!("error[{}]: {}", self.code, self.message),
            "code": self.code,
        })
    }
}

impl From<mdevmig::Error> for QErr {
    fn from(e: mdevmig::Error) -> Self {
        QErr {
            class: "GenericError",
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

/// Shorthand for a bad-arguments error.
pub fn bad_args(message: impl Into<String>) -> QErr {
    QErr::new("qmp.bad_arguments", message)
}
