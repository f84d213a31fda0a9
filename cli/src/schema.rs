//! `mdevmig schema`: the built-in plugins' schemas (`dump`) and the comparison
//! of two of them (`diff`), so a plugin change that breaks migrating state
//! between releases fails the vendor's CI instead of a customer's migration.
//! `spec/schema.md` documents both.

use clap::Subcommand;

use mdevmig::schema::{self, Dump, Report};
use mdevmig::{Code, Error, Registry, Result};

use super::output::{say, Out};
use super::Fail;

/// `mdevmig schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// Print the schema of every built-in plugin (or one): per device type,
    /// configuration and state version its sections, record types, min_version,
    /// windows, conversions and attributes. With --json, the exact bytes
    /// spec/schemas/<vendor>.json holds.
    Dump {
        /// Only this plugin (vendor id).
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Compare the previous release's schema OLD with NEW: every difference,
    /// breaking or compatible, with a reason; exit 3 when one breaks.
    Diff {
        /// The previous release's schema: a dump file, a directory of them
        /// (spec/schemas), or - for stdin.
        old: String,
        /// This release's schema (file, directory or -).
        new: Option<String>,
        /// Compare OLD with this build's plugins instead of a NEW file.
        #[arg(long = "against-build", conflicts_with = "new")]
        against_build: bool,
        /// Compare only this plugin (vendor id).
        #[arg(long)]
        plugin: Option<String>,
    },
}

fn usage(message: impl Into<String>) -> Error {
    Error::new(Code::Usage, message)
}

/// The dump of this build's plugins, or only of `plugin`.
fn build_dump(plugin: Option<&str>) -> Result<Dump> {
    let registry = Registry::builtin();
    let d = schema::dump(registry.iter())?;
    match plugin {
        None => Ok(d),
        Some(p) if d.plugin(p).is_some() => Ok(d.only(p)),
        Some(p) => Err(usage(format!(
            "no built-in plugin {p:?}; the built-in plugins are {}",
            d.plugins
                .iter()
                .map(|p| p.vendor.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Runs `mdevmig schema ...`.
pub fn run(cmd: SchemaCmd, out: Out) -> std::result::Result<(), Fail> {
    match cmd {
        SchemaCmd::Dump { plugin } => {
            let d = build_dump(plugin.as_deref())?;
            if out.json {
                say(&d.to_text());
            } else {
                out.ok(&dump_text(&d), serde_json::Value::Null);
            }
            Ok(())
        }
        SchemaCmd::Diff {
            old,
            new,
            against_build,
            plugin,
        } => diff(&old, new.as_deref(), against_build, plugin.as_deref(), out),
    }
}

fn diff(
    old: &str,
    new: Option<&str>,
    against_build: bool,
    plugin: Option<&str>,
    out: Out,
) -> std::result::Result<(), Fail> {
    // Arguments first: a usage error whatever the files hold.
    if new.is_none() && !against_build {
        return Err(usage("schema diff needs NEW (a file, a directory or -) or --against-build").into());
    }
    if old == "-" && new == Some("-") {
        return Err(usage("only one of OLD and NEW can be - (stdin)").into());
    }
    let old_dump = schema::load(old)?;
    let new_dump = match new {
        Some(n) => schema::load(n)?,
        None => build_dump(None)?,
    };
    let (old_dump, new_dump) = match plugin {
        Some(p) if old_dump.plugin(p).is_none() && new_dump.plugin(p).is_none() => {
            return Err(usage(format!("neither schema has plugin {p:?}")).into());
        }
        Some(p) => (old_dump.only(p), new_dump.only(p)),
        None => (old_dump, new_dump),
    };
    let report = schema::diff(&old_dump, &new_dump);
    let value = serde_json::to_value(&report).map_err(|e| Error::new(Code::Internal, e.to_string()))?;
    out.ok(&report_text(&report), value);
    if report.breaking() == 0 {
        return Ok(());
    }
    let first = report
        .findings
        .iter()
        .find(|f| f.severity == schema::Severity::Breaking)
        .map_or_else(String::new, |f| {
            format!("; the first: {}: {}", f.class.id(), f.reason)
        });
    // Each finding's reason says what to do for its class (spec/schema.md §4, §5).
    let e = Error::new(
        Code::BreakingChange,
        format!("{} breaking change(s){first}", report.breaking()),
    );
    Err(Fail::reported(e, out.json))
}

/// One line per finding, then the summary line.
fn report_text(r: &Report) -> String {
    let mut t = String::new();
    for f in &r.findings {
        let mut at = f.plugin.clone();
        if let Some(d) = &f.device_type {
            at.push_str(&format!("/{d}"));
        }
        if let Some(c) = &f.configuration {
            at.push_str(&format!(" [{c}]"));
        }
        if let Some(v) = f.version {
            at.push_str(&format!(" v{v}"));
        }
        let sev = match f.severity {
            schema::Severity::Breaking => "breaking",
            schema::Severity::Compatible => "compatible",
        };
        t.push_str(&format!("{sev:<10} {:<28} {at}: {}\n", f.class.id(), f.reason));
    }
    t.push_str(&match r.verdict() {
        "identical" => "no differences: nothing breaks\n".to_owned(),
        v => format!(
            "{} breaking, {} compatible: {}\n",
            r.breaking(),
            r.compatible(),
            if v == "breaking" {
                "BREAKING"
            } else {
                "nothing breaks"
            }
        ),
    });
    t
}

fn window(w: Option<schema::Window>) -> String {
    w.map_or_else(|| "nothing".to_owned(), |w| w.to_string())
}

/// A dump for people: types, configurations, versions and their sections.
fn dump_text(d: &Dump) -> String {
    let mut t = String::new();
    for p in &d.plugins {
        t.push_str(&format!("{} (plugin {})\n", p.vendor, p.plugin_version));
        for ty in &p.device_types {
            t.push_str(&format!(
                "  {}: produces {}, loads {}\n",
                ty.name,
                window(ty.produce),
                window(ty.load)
            ));
            for c in &ty.configurations {
                let attrs: Vec<String> = c.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
                t.push_str(&format!("    configuration {}\n", attrs.join(",")));
                for v in &c.versions {
                    let convs: Vec<String> = v.conversions.iter().map(|x| x.to.to_string()).collect();
                    t.push_str(&format!(
                        "      v{} (min_version {}){}\n",
                        v.version,
                        v.min_version,
                        if convs.is_empty() {
                            String::new()
                        } else {
                            format!(", converts to {}", convs.join(", "))
                        }
                    ));
                    for s in &v.sections {
                        t.push_str(&format!("        {}\n", section_text(s)));
                    }
                }
            }
        }
    }
    t
}

fn section_text(s: &schema::SectionSchema) -> String {
    let mut t = format!(
        "{} v{} {} {}{} bound {}",
        s.name,
        s.version,
        if s.required { "required" } else { "optional" },
        format!("{:?}", s.kind).to_lowercase(),
        if s.streamed { " streamed" } else { "" },
        s.bound
    );
    if let Some(l) = s.length {
        t.push_str(&format!(" length {l}"));
    }
    if let Some(c) = &s.capability {
        t.push_str(&format!(" needs {c}"));
    }
    if !s.records.is_empty() {
        let r: Vec<String> = s
            .records
            .iter()
            .map(|r| format!("{}={}{}", r.code, r.name, if r.optional { "?" } else { "" }))
            .collect();
        t.push_str(&format!(" records {}", r.join(" ")));
    }
    t
}
