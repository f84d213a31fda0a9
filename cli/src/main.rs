//! The `mdevmig` command line: argument parsing and output only; the work is done
//! by the library.
//!
//! Conventions for every command: `--json` prints one JSON object on stdout; errors
//! print as `error[<code>]: <message>` on stderr; the exit status is 0 ok, 2 usage,
//! 3 incompatible, 4 stream rejected, 5 device error, 1 anything else; a `FILE` of
//! `-` means stdin or stdout.

mod bench;
mod bench_live;
mod demo;
mod inspect;
pub mod io;
pub mod live;
pub mod migrate;
pub mod output;
mod plugins;
mod schema;
mod serve;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use mdevmig::auth::{SigningKeyPair, TrustStore};
use mdevmig::{Code, Error, Result};
use output::Out;

/// Authenticated, validated live migration of device state.
#[derive(Debug, Parser)]
#[command(name = "mdevmig", version, about, long_about = None)]
pub struct Cli {
    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Operator policy: the same flags on `check`, `save --for` and `restore`, so the
/// pre-check and the restore decide alike.
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Policy file (JSON: allow_skip, pin_version, refuse_versions).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Allow skipping this section (optional, or needing a capability this host lacks); repeatable.
    #[arg(long = "allow-skip")]
    allow_skip: Vec<String>,
    /// Pin the state version.
    #[arg(long = "pin-version")]
    pin_version: Option<u32>,
    /// Refuse this state version; repeatable.
    #[arg(long = "refuse-version")]
    refuse_version: Vec<u32>,
    /// Let this vendor's state travel although no plugin here validates it
    /// (authenticated, type and configuration matched, content unchecked); repeatable.
    #[arg(long = "allow-opaque")]
    allow_opaque: Vec<String>,
    /// Most bytes of sections a restore may read and discard [default: 16 MiB].
    #[arg(long = "max-skipped-bytes")]
    max_skipped_bytes: Option<u64>,
    /// Refuse streams not bound to a session nonce this host issued (--session).
    #[arg(long = "require-session")]
    require_session: bool,
}

impl PolicyArgs {
    /// The policy these flags (and the file) give.
    pub fn policy(&self) -> Result<mdevmig::compat::Policy> {
        let mut p = match &self.policy {
            Some(f) => mdevmig::compat::load_policy(f)?,
            None => mdevmig::compat::Policy::default(),
        };
        p.allow_skip.extend(self.allow_skip.iter().cloned());
        if self.pin_version.is_some() {
            p.pin_version = self.pin_version;
        }
        p.refuse_versions.extend(self.refuse_version.iter().copied());
        p.allow_opaque.extend(self.allow_opaque.iter().cloned());
        if self.max_skipped_bytes.is_some() {
            p.max_skipped_bytes = self.max_skipped_bytes;
        }
        p.require_session |= self.require_session;
        Ok(p)
    }
}

/// How `save` and `restore` treat the files they create and the streams they move.
#[derive(Debug, Args, Clone)]
pub struct FileArgs {
    /// Replace an existing output file or file: image (never following a symlink).
    #[arg(long)]
    force: bool,
    /// Mode of the files created (octal) [default: 600: device state holds guest data].
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Seconds without a byte moving on the stream before it is refused
    /// (io.idle_timeout) and the device put back; 0 waits forever.
    #[arg(long = "idle-timeout", default_value_t = io::DEFAULT_IDLE_TIMEOUT_SECS)]
    idle_timeout: u64,
}

impl FileArgs {
    /// The idle timeout, `None` for none.
    pub fn idle(&self) -> Option<std::time::Duration> {
        (self.idle_timeout > 0).then(|| std::time::Duration::from_secs(self.idle_timeout))
    }
}

fn parse_mode(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode of at most 777"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 signing key: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
        /// Replace existing PREFIX.key and PREFIX.pub (files or symlinks; a symlink
        /// is replaced, never followed). Without it an existing name is refused.
        #[arg(long)]
        force: bool,
    },
    /// Decode an envelope without trusting it (unless --trust is given).
    Inspect {
        /// The stream, or - for stdin.
        file: String,
        /// Also verify every signature against this trust store (.pub file or directory).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Load the trust store even if others can write it or it is not owned by
        /// root or you: skips its ownership and permission checks (not the
        /// regular-file and size checks) and warns on stderr.
        #[arg(long = "insecure-trust-store")]
        insecure_trust_store: bool,
    },
    /// Fully validate an envelope without a device; exit 0 when valid.
    Verify {
        /// The stream, or - for stdin.
        file: String,
        /// Trust store: a .pub file or a directory of them.
        #[arg(long)]
        trust: PathBuf,
        /// Load the trust store even if others can write it or it is not owned by
        /// root or you: skips its ownership and permission checks (not the
        /// regular-file and size checks) and warns on stderr.
        #[arg(long = "insecure-trust-store")]
        insecure_trust_store: bool,
        /// Require the stream to be bound to this session nonce (64 hex digits).
        #[arg(long)]
        session: Option<String>,
    },
    /// Save a device's state into a signed envelope.
    Save {
        /// sim:<plugin>/<type>[,seed=N][,k=v...] | file:<path>,plugin=<p>,type=<t> | vfio:<uuid or sysfs path>
        #[arg(long)]
        device: String,
        /// Signing key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Output file, or - for stdout.
        #[arg(short = 'o', long = "output")]
        output: String,
        /// Use PRE_COPY when the device supports it: state moves in rounds while the
        /// device runs, until what is left fits --downtime-bytes (without it: after
        /// the initial data).
        #[arg(long)]
        precopy: bool,
        #[command(flatten)]
        converge: ConvergeArgs,
        /// Emit this state version (down-converting through the plugin).
        #[arg(long = "state-version")]
        state_version: Option<u32>,
        /// Bind the stream to the destination's session nonce (64 hex digits).
        #[arg(long)]
        session: Option<String>,
        /// Chunk size in bytes (power of two, 4096..16777216) [default: 1048576, or
        /// 524288 where the hashing engine wants more chunks in flight (AVX-512)]
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Emit the state version and sections this destination descriptor accepts (file or -).
        #[arg(long = "for")]
        for_descriptor: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        files: FileArgs,
    },
    /// Live-migrate one device to another in this process through two migration
    /// regions, driven as QEMU drives kernel devices: PRE_COPY rounds (read until
    /// "no more now", precopy info, data size), STOP_COPY to the end, STOP; the
    /// destination RESUMING, written as data arrives, STOP, RUNNING. The stream is
    /// signed with an ephemeral key and bound to the destination's session nonce.
    Live {
        /// Source device spec (sim:..., file:..., vfio:...).
        #[arg(long)]
        from: String,
        /// Destination device spec.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        converge: ConvergeArgs,
        /// Abandon the migration after this many PRE_COPY rounds: the source leaves
        /// PRE_COPY for RUNNING, the destination is torn down and reset.
        #[arg(long = "abort-after-round", value_parser = clap::value_parser!(u32).range(1..))]
        abort_after_round: Option<u32>,
        /// Chunk size in bytes (power of two, 4096..16777216).
        #[arg(long)]
        chunk_size: Option<u32>,
        /// Validate vendor structures in this process instead of the sandboxed child.
        #[arg(long = "validate-in-process")]
        validate_in_process: bool,
    },
    /// Verify, validate and load a signed envelope into a device.
    Restore {
        /// The destination device spec.
        #[arg(long)]
        device: String,
        /// Trust store: a .pub file or a directory of them.
        #[arg(long)]
        trust: PathBuf,
        /// Load the trust store even if others can write it or it is not owned by
        /// root or you: skips its ownership and permission checks (not the
        /// regular-file and size checks) and warns on stderr.
        #[arg(long = "insecure-trust-store")]
        insecure_trust_store: bool,
        /// Input file, or - for stdin.
        #[arg(short = 'i', long = "input")]
        input: String,
        /// Leave the device RUNNING (default: STOP, for the VMM to resume).
        #[arg(long)]
        resume: bool,
        /// Require the stream to be bound to this session nonce (64 hex digits).
        #[arg(long)]
        session: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Validate vendor structures in this process instead of the sandboxed
        /// child (for hosts that forbid forking; a plugin bug then hits mdevmig).
        #[arg(long = "validate-in-process")]
        validate_in_process: bool,
        #[command(flatten)]
        files: FileArgs,
    },
    /// Describe a device: vendor, type, version windows, configuration, sections.
    Describe {
        /// The device spec.
        #[arg(long)]
        device: String,
        /// Describe this vendor's device although no plugin here knows it (its
        /// state would travel unvalidated); repeatable.
        #[arg(long = "allow-opaque")]
        allow_opaque: Vec<String>,
    },
    /// Pre-check: can the state of the device a descriptor describes go to this device?
    Check {
        /// The destination device spec.
        #[arg(long)]
        device: String,
        /// The source device's descriptor (from `describe --json`), a file or -.
        #[arg(long)]
        source: String,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Measure save, verify and save-pipe-restore against SHA-256 and a plain pipe;
    /// live migration's downtime against STOP_COPY only, its envelope against raw.
    Bench {
        /// Simulated vGPU type (vgpu-1g has over 1 GiB of state).
        #[arg(long, default_value = "vgpu-1g")]
        device_type: String,
        /// Rounds of every measurement; each figure is the median of its rounds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Xe VF type whose variable-length stream is saved, verified and
        /// restored once (xe-vf-1g streams over 1 GiB).
        #[arg(long, default_value = "xe-vf-1g")]
        xe_type: String,
        /// Xe VF type live-migrated with PRE_COPY (and with STOP_COPY only, and
        /// raw) while its guest dirties --dirty-rate bytes a second.
        #[arg(long, default_value = "xe-vf-1g")]
        live_type: String,
        /// Bytes per second the live source's guest dirties while it runs (N, or
        /// N with K, M or G).
        #[arg(long = "dirty-rate", default_value = "128M", value_parser = parse_bytes)]
        dirty_rate: u64,
        /// The live migrations' downtime budget: stop the source once what
        /// STOP_COPY would still move is at most this (N, or N with K, M or G).
        #[arg(long = "downtime-bytes", default_value = "4M", value_parser = parse_bytes)]
        downtime_bytes: u64,
    },
    /// Scheduler labels: what this host offers and what a VM's state requires.
    Labels {
        /// The device spec.
        #[arg(long)]
        device: String,
    },
    /// List the built-in vendor plugins: device types, version windows, stream shape.
    Plugins,
    /// Plugin schemas: dump this build's, or diff two releases' (exit 3 when a
    /// change breaks migrating state between them).
    Schema {
        #[command(subcommand)]
        cmd: schema::SchemaCmd,
    },
    /// Issue a fresh session nonce (64 hex digits) for a live migration: the
    /// destination passes it to `restore --session`, the source to `save --session`.
    Session,
    /// Serve QMP on a Unix socket: pre-checks, save and restore jobs with events,
    /// and the migration region over passed VFIO fds, for management stacks.
    Serve(Box<serve::ServeArgs>),
    /// Run a whole migration on simulated devices and explain each step.
    Demo {
        /// Framebuffer size of the simulated vGPU.
        #[arg(long, default_value = "vgpu-64m")]
        device_type: String,
    },
}

/// When a live save stops the device (a VMM's downtime limit).
#[derive(clap::Args, Debug, Clone)]
struct ConvergeArgs {
    /// Stop the device once the envelope bytes still to move after the stop are at
    /// most this (plain bytes, or with a K, M or G suffix).
    #[arg(long = "downtime-bytes", value_parser = parse_bytes)]
    downtime_bytes: Option<u64>,
    /// Stop after this many PRE_COPY rounds, converged or not.
    #[arg(long = "max-rounds", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    max_rounds: u32,
    /// Stop once PRE_COPY has lasted this many seconds, converged or not.
    #[arg(long = "max-precopy-seconds", default_value_t = 60.0, value_parser = parse_seconds)]
    max_precopy_seconds: f64,
}

impl ConvergeArgs {
    fn converge(&self) -> mdevmig::broker::Converge {
        mdevmig::broker::Converge {
            downtime_bytes: self.downtime_bytes,
            max_rounds: self.max_rounds,
            max_precopy: std::time::Duration::from_secs_f64(self.max_precopy_seconds),
        }
    }
}

/// `N`, `NK`, `NM` or `NG` (binary multiples) as bytes.
fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let (digits, shift) = match s.strip_suffix(['K', 'k']) {
        Some(d) => (d, 10),
        None => match s.strip_suffix(['M', 'm']) {
            Some(d) => (d, 20),
            None => match s.strip_suffix(['G', 'g']) {
                Some(d) => (d, 30),
                None => (s, 0),
            },
        },
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (N, or N with K, M or G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(entry())
}

/// Runs the command line; returns the process exit status.
fn entry() -> u8 {
    // The restore's sandboxed validator is this same binary, started again with
    // the child's argument.
    if let Some(status) = mdevmig::sandbox::child_entry(&mdevmig::plugins::Registry::builtin()) {
        return status;
    }
    let json = std::env::args().any(|a| a == "--json");
    let out = Out { json };
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    2
                } else {
                    0
                };
            }
            let msg = e.render().to_string();
            let msg = msg.trim().trim_start_matches("error: ");
            return out.error(&Error::new(Code::Usage, msg.to_string()));
        }
    };
    let result = run(cli.command, out).map_err(stopped);
    bench::report_rss();
    match result {
        Ok(()) => 0,
        Err(Fail {
            err,
            json_done: false,
        }) if err.code == Code::Interrupted => {
            out.error(&err);
            // 128 + the signal, as a shell reports a process the signal killed.
            io::stopped_by()
                .and_then(|sig| u8::try_from(sig).ok())
                .map_or(130, |sig| 128u8.saturating_add(sig))
        }
        Err(Fail {
            err,
            json_done: false,
        }) => out.error(&err),
        Err(Fail { err, json_done: true }) => {
            output::say_err(&format!(
                "error[{}]: {}\n",
                err.code,
                output::printable(&err.message)
            ));
            err.code.exit_status()
        }
    }
}

/// A failure caused by a signal, a broken pipe or a stalled stream is reported as
/// that (`io.interrupted`, `io.idle_timeout`) whatever read or write it surfaced
/// in; by then the broker has put the device back and partial files are gone.
fn stopped(mut f: Fail) -> Fail {
    match io::stopped_by() {
        Some(0) => {
            f.err = Error::new(
                Code::IdleTimeout,
                format!("the stream stalled: {}", f.err.message),
            );
        }
        Some(sig) => {
            let name = match sig {
                2 => "SIGINT",
                13 => "SIGPIPE (the output's reader went away)",
                15 => "SIGTERM",
                _ => "a signal",
            };
            f.err = Error::new(
                Code::Interrupted,
                format!("stopped by {name}; the device was put back and partial files removed"),
            );
        }
        None => {}
    }
    f
}

/// A command's failure; `json_done` when the command already put the error into
/// its own JSON output.
pub struct Fail {
    err: Error,
    json_done: bool,
}

impl Fail {
    /// An error whose details the command already printed (in JSON mode).
    pub fn reported(err: Error, json_done: bool) -> Self {
        Fail { err, json_done }
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Fail {
            err,
            json_done: false,
        }
    }
}

/// Loads the trust store a command names, with its permission checks unless
/// `--insecure-trust-store`, which says loudly what it skips (and what the checks
/// would have refused).
pub fn load_trust(trust: &Path, insecure: bool) -> Result<TrustStore> {
    if insecure {
        warn_insecure(trust);
    }
    TrustStore::load_with(trust, mdevmig::auth::TrustOptions { insecure })
}

fn warn_insecure(trust: &Path) {
    let refused = TrustStore::load_with(trust, mdevmig::auth::TrustOptions::default())
        .err()
        .filter(|e| e.code == Code::TrustStorePermissions)
        .map_or_else(String::new, |e| {
            format!("; without it: error[{}]: {}", e.code, e.message)
        });
    output::say_err(&output::printable(&format!(
        "warning: --insecure-trust-store: the trust store's owner and permissions are not checked; \
         anyone who can write it chooses which keys this host trusts{refused}\n"
    )));
}

fn run(cmd: Command, out: Out) -> std::result::Result<(), Fail> {
    match cmd {
        Command::Keygen { out: prefix, force } => Ok(keygen(&prefix, force, out)?),
        Command::Inspect {
            file,
            trust,
            insecure_trust_store,
        } => inspect::run(&file, trust.as_deref(), insecure_trust_store, out),
        Command::Verify {
            file,
            trust,
            session,
            insecure_trust_store,
        } => Ok(verify(
            &file,
            &trust,
            insecure_trust_store,
            session.as_deref(),
            out,
        )?),
        Command::Live {
            from,
            to,
            converge,
            abort_after_round,
            chunk_size,
            validate_in_process,
        } => Ok(live::run(
            live::LiveArgs {
                from: &from,
                to: &to,
                converge: converge.converge(),
                abort_after: abort_after_round,
                validation: if validate_in_process {
                    mdevmig::sandbox::Validation::InProcess
                } else {
                    mdevmig::sandbox::Validation::default()
                },
                chunk_size,
            },
            out,
        )?),
        Command::Save {
            device,
            key,
            output,
            precopy,
            converge,
            state_version,
            session,
            chunk_size,
            for_descriptor,
            policy,
            files,
        } => Ok(migrate::save(
            migrate::SaveArgs {
                device: &device,
                key: &key,
                output: &output,
                precopy,
                converge: converge.converge(),
                version: state_version,
                session: session.as_deref(),
                chunk_size,
                for_descriptor: for_descriptor.as_deref(),
                policy: policy.policy()?,
                force: files.force,
                mode: files.mode.unwrap_or(mdevmig::fsutil::DEFAULT_MODE),
                idle: files.idle(),
            },
            out,
        )?),
        Command::Restore {
            insecure_trust_store,
            device,
            trust,
            input,
            resume,
            session,
            policy,
            validate_in_process,
            files,
        } => Ok(migrate::restore(
            migrate::RestoreArgs {
                device: &device,
                trust: &trust,
                input: &input,
                resume,
                session: session.as_deref(),
                policy: policy.policy()?,
                in_process: validate_in_process,
                insecure_trust_store,
                force: files.force,
                idle: files.idle(),
            },
            out,
        )?),
        Command::Describe { device, allow_opaque } => Ok(migrate::describe(&device, &allow_opaque, out)?),
        Command::Check {
            device,
            source,
            policy,
        } => migrate::check(&device, &source, &policy.policy()?, out),
        Command::Labels { device } => Ok(migrate::labels(&device, out)?),
        Command::Bench {
            device_type,
            rounds,
            xe_type,
            live_type,
            dirty_rate,
            downtime_bytes,
        } => Ok(bench::run(
            &device_type,
            &xe_type,
            &bench_live::LiveBench {
                device_type: &live_type,
                dirty_rate,
                downtime_bytes,
            },
            rounds as usize,
            out,
        )?),
        Command::Plugins => Ok(plugins::run(out)?),
        Command::Schema { cmd } => schema::run(cmd, out),
        Command::Session => {
            let hex = mdevmig::auth::hex(&mdevmig::auth::new_session_nonce());
            out.ok(&hex, json!({"session": hex}));
            Ok(())
        }
        Command::Demo { device_type } => Ok(demo::run(&device_type, out)?),
        Command::Serve(args) => Ok(serve::run(*args)?),
    }
}

/// Opens `-` as stdin or a path as a file, watched for stalls and signals
/// ([`io::Watched`]; `idle` of `None` waits forever).
/// The stream reader reads whole chunks itself, so inputs are not buffered again
/// (a BufReader would copy every byte twice).
pub fn open_input(file: &str, idle: Option<std::time::Duration>) -> Result<Box<dyn Read + Send>> {
    if file == "-" {
        use std::os::fd::AsFd;
        grow_pipe(&std::io::stdin());
        // An unbuffered handle on fd 0 (Stdin would buffer and lock).
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io(Code::IoOpen, "stdin", &e))?;
        Ok(Box::new(io::Watched::new(std::fs::File::from(fd), idle)))
    } else {
        let f = std::fs::File::open(file).map_err(|e| Error::io(Code::IoOpen, file, &e))?;
        Ok(Box::new(io::Watched::new(f, idle)))
    }
}

/// Grows a pipe's kernel buffer to 1 MiB (fewer wake-ups per chunk); anything
/// that is not a pipe, or a refusal, is ignored.
fn grow_pipe(fd: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// Where a command writes a stream: stdout, or a file created beside its
/// destination and given its name only by [`Output::commit`] (see
/// [`mdevmig::fsutil::AtomicFile`]); dropped uncommitted, the file is removed.
pub struct Output {
    w: std::io::BufWriter<io::Watched<std::fs::File>>,
    file: Option<mdevmig::fsutil::AtomicFile>,
}

impl Output {
    /// Opens `-` as stdout or starts a new file at `file` (refused if it exists
    /// unless `force`; created with `mode`).
    pub fn open(file: &str, force: bool, mode: u32, idle: Option<std::time::Duration>) -> Result<Self> {
        if file == "-" {
            use std::os::fd::AsFd;
            let stdout = std::io::stdout();
            grow_pipe(&stdout);
            // A plain handle on fd 1: Stdout is line-buffered and would scan every
            // chunk for newlines and split its writes at them.
            let fd = stdout
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io(Code::IoOpen, "stdout", &e))?;
            Ok(Output {
                w: std::io::BufWriter::with_capacity(
                    64 << 10,
                    io::Watched::new(std::fs::File::from(fd), idle),
                ),
                file: None,
            })
        } else {
            let mut atomic = mdevmig::fsutil::AtomicFile::create(Path::new(file), mode, force)?;
            let f = atomic
                .file()
                .try_clone()
                .map_err(|e| Error::io(Code::IoOpen, file, &e))?;
            Ok(Output {
                w: std::io::BufWriter::with_capacity(64 << 10, io::Watched::new(f, idle)),
                file: Some(atomic),
            })
        }
    }

    /// Flushes and, for a file, gives it its name.
    pub fn commit(mut self) -> Result<()> {
        self.w
            .flush()
            .map_err(|e| Error::io(Code::IoWrite, "flushing the output", &e))?;
        match self.file {
            Some(f) => f.commit(),
            None => Ok(()),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
        self.w.write_vectored(bufs)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

fn keygen(prefix: &Path, force: bool, out: Out) -> Result<()> {
    let key = SigningKeyPair::generate();
    let (k, p) = key.write_files_with(prefix, force)?;
    out.ok(
        &format!(
            "key id {}\nprivate key {} (mode 0600)\npublic key  {}\n",
            key.id(),
            k.display(),
            p.display()
        ),
        json!({"key_id": key.id().to_string(), "private_key": k, "public_key": p}),
    );
    Ok(())
}

fn verify(file: &str, trust: &Path, insecure: bool, session: Option<&str>, out: Out) -> Result<()> {
    // Arguments first: a malformed nonce is a usage error whatever the files hold.
    let expected_nonce = session.map(mdevmig::auth::parse_nonce).transpose()?;
    let store = load_trust(trust, insecure)?;
    let v = mdevmig::broker::verify(open_input(file, None)?, &store, expected_nonce)?;
    // The data the stream carried: streamed sections count at their final
    // length, not the bound in the header.
    let (h, chunks, total) = (v.header, v.chunks, v.data_bytes);
    let origin = store.origin(&h.key_id).unwrap_or("?").to_string();
    out.ok(
        &format!(
            "verified: {} {} state v{} (min v{}), {} sections, {} chunks, {} bytes, signed by {} ({})",
            h.vendor,
            h.device_type,
            h.state_version,
            h.min_version,
            h.sections.len(),
            chunks,
            total,
            h.key_id,
            origin
        ),
        json!({
            "verified": true,
            "vendor": h.vendor, "device_type": h.device_type,
            "state_version": h.state_version, "min_version": h.min_version,
            "sections": h.sections.iter().map(|s| json!({"name": s.name, "version": s.version, "required": s.required(), "streamed": s.streamed(), "length": s.length})).collect::<Vec<_>>(),
            "chunks": chunks, "total_len": total, "key_id": h.key_id.to_string(), "key_origin": origin,
            "session_bound": h.session_bound(),
        }),
    );
    Ok(())
}
