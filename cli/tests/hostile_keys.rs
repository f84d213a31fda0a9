//! Keys and trust stores against a hostile local user.
//!
//! mdevmig runs as root next to directories other users can write. These tests run
//! as root and plant files as uid 65534 (`setpriv`, util-linux) or hand them to it
//! (`chown`): symlinks where keygen writes, keys another user owns or can read,
//! trust directories anyone can write, a FIFO named `x.pub`, a 10 MiB `.pub`. Each
//! is refused with its own code, nothing is followed or overwritten, nothing hangs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mdevmig::auth::{SigningKeyPair, TrustOptions, TrustStore};
use mdevmig::Code;

const NOBODY: u32 = 65534;

/// A temporary directory (root, 0755), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mdevmig-hostile-keys-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        chmod(&p, 0o755);
        TempDir(p)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A subdirectory with `mode` (set after creation: the umask does not narrow it).
    fn dir(&self, name: &str, mode: u32) -> PathBuf {
        let p = self.join(name);
        fs::create_dir(&p).unwrap();
        chmod(&p, mode);
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/vectors")
}

/// A stream the vectors' test signer signed, and that signer's public key.
fn signed_stream() -> PathBuf {
    vectors().join("valid-multi-section.mdm")
}

fn signer_pub() -> PathBuf {
    vectors().join("keys/test-signer.pub")
}

/// What a finished command said.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The `error[<code>]` on stderr, if any.
    fn error(&self) -> Option<&str> {
        let rest = self.stderr.split("error[").nth(1)?;
        rest.split(']').next()
    }
}

/// Runs `cmd`, killing it (and failing) if it takes longer than 20 s: nothing here
/// may hang on a FIFO.
fn finish(mut cmd: Command) -> Out {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mdevmig(args: &[&str]) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mdevmig"));
    c.args(args);
    finish(c)
}

/// Runs `script` with `sh -c` as uid/gid 65534 with no supplementary groups.
fn as_nobody(script: &str) {
    let which = Command::new("sh")
        .args(["-c", "command -v setpriv"])
        .output()
        .unwrap();
    assert!(
        which.status.success(),
        "setpriv (util-linux) is needed to act as a second user"
    );
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        script,
    ]);
    let out = finish(c);
    assert_eq!(out.code, Some(0), "as uid 65534: {script}: {}", out.stderr);
}

/// Runs `f` on a thread and fails if it does not return within 20 s.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("hung")
}

fn keygen(prefix: &Path, extra: &[&str]) -> Out {
    let mut args = vec!["keygen", "--out", s(prefix)];
    args.extend_from_slice(extra);
    mdevmig(&args)
}

fn verify(trust: &Path, extra: &[&str]) -> Out {
    let stream = signed_stream();
    let mut args = vec!["verify", s(&stream), "--trust", s(trust)];
    args.extend_from_slice(extra);
    mdevmig(&args)
}

/// `dir/name` holding the test signer's public key, with `mode`.
fn signer_in(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::copy(signer_pub(), &p).unwrap();
    chmod(&p, mode);
    p
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

// ---- keygen ----------------------------------------------------------------

#[test]
fn keygen_refuses_a_planted_symlink_and_leaves_its_target_alone() {
    let d = TempDir::new("symlink");
    let victim = d.join("victim");
    fs::write(&victim, "precious").unwrap();
    chmod(&victim, 0o644);
    // /tmp-like: anyone may create names in it.
    let shared = d.dir("shared", 0o1777);
    as_nobody(&format!(
        "ln -s {} {}/site.key && ln -s {}/nowhere {}/dangling.key",
        s(&victim),
        s(&shared),
        s(&d.0),
        s(&shared)
    ));

    let out = keygen(&shared.join("site"), &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.error(), Some("io.exists"), "{}", out.stderr);
    assert!(out.stderr.contains("symlink"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(mode(&victim), 0o644);
    assert_eq!(fs::read_link(shared.join("site.key")).unwrap(), victim);
    // Neither file was created: refused before anything was written.
    assert_eq!(names(&shared), ["dangling.key", "site.key"]);

    // A dangling symlink is an existing name too; its target is not created.
    let out = keygen(&shared.join("dangling"), &[]);
    assert_eq!(out.error(), Some("io.exists"), "{}", out.stderr);
    assert!(!d.join("nowhere").exists());

    // --force replaces the symlink itself, never what it points to.
    let out = keygen(&shared.join("site"), &["--force"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    let key = shared.join("site.key");
    let meta = fs::symlink_metadata(&key).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    assert_eq!(mode(&shared.join("site.pub")), 0o644);
    SigningKeyPair::load(&key).unwrap();
    // No temporary file is left behind.
    assert_eq!(names(&shared), ["dangling.key", "site.key", "site.pub"]);
}

#[test]
fn keygen_refuses_a_key_another_user_owns_unless_forced() {
    let d = TempDir::new("owned");
    let theirs = d.join("site.key");
    fs::write(&theirs, "theirs").unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();

    let out = keygen(&d.join("site"), &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.error(), Some("io.exists"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "theirs");
    assert_eq!(fs::metadata(&theirs).unwrap().uid(), NOBODY);
    assert!(!d.join("site.pub").exists(), "the public half was written alone");

    // An existing .pub alone also stops both files.
    let out = keygen(&d.join("other"), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    fs::remove_file(d.join("other.key")).unwrap();
    let out = keygen(&d.join("other"), &[]);
    assert_eq!(out.error(), Some("io.exists"), "{}", out.stderr);
    assert!(!d.join("other.key").exists());

    let out = keygen(&d.join("site"), &["--force"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let meta = fs::metadata(&theirs).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600));
    SigningKeyPair::load(&theirs).unwrap();
}

#[test]
fn keygen_refuses_a_directory_or_fifo_even_with_force() {
    let d = TempDir::new("nonregular");
    fs::create_dir(d.join("a.key")).unwrap();
    nix::unistd::mkfifo(&d.join("b.pub"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    for (prefix, extra) in [("a", &[][..]), ("a", &["--force"][..]), ("b", &["--force"][..])] {
        let out = keygen(&d.join(prefix), extra);
        assert_eq!(out.code, Some(1), "{prefix} {extra:?}: {}", out.stderr);
        assert_eq!(
            out.error(),
            Some("io.not_regular"),
            "{prefix} {extra:?}: {}",
            out.stderr
        );
    }
    assert_eq!(names(&d.0), ["a.key", "b.pub"]);
}

#[test]
fn keygen_modes_do_not_depend_on_the_umask() {
    let d = TempDir::new("umask");
    for (umask, name) in [("000", "open"), ("077", "closed")] {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!(
                "umask {umask} && exec {} keygen --out {}",
                env!("CARGO_BIN_EXE_mdevmig"),
                s(&d.join(name))
            ),
        ]);
        let out = finish(c);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(mode(&d.join(&format!("{name}.key"))), 0o600, "umask {umask}");
        assert_eq!(mode(&d.join(&format!("{name}.pub"))), 0o644, "umask {umask}");
    }
}

// ---- private keys ------------------------------------------------------------

#[test]
fn a_private_key_others_can_read_or_another_user_owns_is_refused() {
    let d = TempDir::new("keyperm");
    let prefix = d.join("site");
    assert_eq!(keygen(&prefix, &[]).code, Some(0));
    let key = d.join("site.key");
    for m in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
        chmod(&key, m);
        let e = SigningKeyPair::load(&key).err().unwrap();
        assert_eq!(e.code, Code::KeyPermissions, "mode {m:o}: {e}");
    }
    // The CLI says so with the code, exit 4.
    chmod(&key, 0o644);
    let stream = d.join("s.mdm");
    let out = mdevmig(&[
        "save",
        "--device",
        "sim:mtty/mtty-2",
        "--key",
        s(&key),
        "-o",
        s(&stream),
    ]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(out.error(), Some("auth.key_permissions"), "{}", out.stderr);
    assert!(!stream.exists());
    for m in [0o600, 0o400] {
        chmod(&key, m);
        SigningKeyPair::load(&key).unwrap();
    }
    // Owned by another user (who could have chosen its content): refused at 0600.
    chmod(&key, 0o600);
    std::os::unix::fs::chown(&key, Some(NOBODY), None).unwrap();
    let e = SigningKeyPair::load(&key).err().unwrap();
    assert_eq!(e.code, Code::KeyPermissions, "{e}");
    assert!(e.message.contains("65534"), "{e}");
}

#[test]
fn a_private_key_that_is_a_symlink_fifo_or_huge_is_refused_without_hanging() {
    let d = TempDir::new("keykind");
    assert_eq!(keygen(&d.join("site"), &[]).code, Some(0));
    let link = d.join("link.key");
    std::os::unix::fs::symlink(d.join("site.key"), &link).unwrap();
    assert_eq!(SigningKeyPair::load(&link).err().unwrap().code, Code::NotRegular);
    let fifo = d.join("fifo.key");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = within(move || SigningKeyPair::load(&fifo).err().unwrap());
    assert_eq!(e.code, Code::NotRegular, "{e}");
    let huge = d.join("huge.key");
    fs::File::create(&huge).unwrap().set_len(10 << 20).unwrap();
    chmod(&huge, 0o600);
    assert_eq!(
        SigningKeyPair::load(&huge).err().unwrap().code,
        Code::InputTooLarge
    );
}

// ---- trust stores --------------------------------------------------------------

#[test]
fn a_trust_store_others_can_write_is_refused() {
    let d = TempDir::new("trustperm");
    // The control: a root-owned 0755 directory with a 0644 key verifies.
    let good = d.dir("good", 0o755);
    signer_in(&good, "signer.pub", 0o644);
    let out = verify(&good, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    for m in [0o777, 0o775, 0o757, 0o770] {
        let dir = d.dir(&format!("dir-{m:o}"), m);
        signer_in(&dir, "signer.pub", 0o644);
        let out = verify(&dir, &[]);
        assert_eq!(out.code, Some(4), "dir {m:o}: {}", out.stderr);
        assert_eq!(
            out.error(),
            Some("auth.trust_store_permissions"),
            "dir {m:o}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--insecure-trust-store"), "{}", out.stderr);
    }
    // A .pub file in a good directory, or a file store, that others can write.
    for m in [0o666, 0o664, 0o646] {
        let dir = d.dir(&format!("file-{m:o}"), 0o755);
        let file = signer_in(&dir, "signer.pub", m);
        for store in [&dir, &file] {
            let out = verify(store, &[]);
            assert_eq!(
                out.error(),
                Some("auth.trust_store_permissions"),
                "{m:o}: {}",
                out.stderr
            );
        }
    }
    // A store another user owns: that user chooses its keys.
    let theirs = d.dir("theirs", 0o755);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    signer_in(&theirs, "signer.pub", 0o644);
    let e = TrustStore::load(&theirs).err().unwrap();
    assert_eq!(e.code, Code::TrustStorePermissions, "{e}");
    let theirs_file = signer_in(&good, "theirs.pub", 0o644);
    std::os::unix::fs::chown(&theirs_file, Some(NOBODY), Some(NOBODY)).unwrap();
    assert_eq!(
        TrustStore::load(&good).err().unwrap().code,
        Code::TrustStorePermissions
    );
    assert_eq!(
        TrustStore::load(&theirs_file).err().unwrap().code,
        Code::TrustStorePermissions
    );
}

#[test]
fn a_root_owned_sticky_dir_is_accepted_but_not_keys_others_plant_in_it() {
    let d = TempDir::new("sticky");
    let sticky = d.dir("sticky", 0o1777);
    signer_in(&sticky, "signer.pub", 0o644);
    let out = verify(&sticky, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // Anyone may add a file to it; a key another user adds is not trusted.
    let untrusted = vectors().join("keys/untrusted.pub");
    as_nobody(&format!("cp {} {}/planted.pub", s(&untrusted), s(&sticky)));
    let out = verify(&sticky, &[]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(
        out.error(),
        Some("auth.trust_store_permissions"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("planted.pub"), "{}", out.stderr);

    // Sticky but owned by another user: its owner can do anything in it.
    let not_root = d.dir("not-root", 0o1777);
    std::os::unix::fs::chown(&not_root, Some(NOBODY), Some(NOBODY)).unwrap();
    chmod(&not_root, 0o1777);
    signer_in(&not_root, "signer.pub", 0o644);
    assert_eq!(
        TrustStore::load(&not_root).err().unwrap().code,
        Code::TrustStorePermissions
    );
}

#[test]
fn a_fifo_named_pub_does_not_hang_the_trust_store() {
    let d = TempDir::new("fifo");
    let dir = d.dir("trust", 0o755);
    signer_in(&dir, "signer.pub", 0o644);
    nix::unistd::mkfifo(
        &dir.join("x.pub"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let t = Instant::now();
    let out = verify(&dir, &[]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.error(), Some("io.not_regular"), "{}", out.stderr);
    assert!(
        out.stderr.contains("x.pub") && out.stderr.contains("FIFO"),
        "{}",
        out.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // A FIFO given as the store itself, and a symlinked .pub, the same.
    let fifo = dir.join("x.pub");
    let e = within(move || TrustStore::load(&fifo).err().unwrap());
    assert_eq!(e.code, Code::NotRegular, "{e}");
    let links = d.dir("links", 0o755);
    std::os::unix::fs::symlink(signer_pub(), links.join("signer.pub")).unwrap();
    assert_eq!(TrustStore::load(&links).err().unwrap().code, Code::NotRegular);
    // --insecure-trust-store skips permissions, not this.
    let out = verify(&dir, &["--insecure-trust-store"]);
    assert_eq!(out.error(), Some("io.not_regular"), "{}", out.stderr);
}

#[test]
fn a_huge_pub_is_refused_by_its_size() {
    let d = TempDir::new("huge");
    let dir = d.dir("trust", 0o755);
    signer_in(&dir, "signer.pub", 0o644);
    let huge = dir.join("huge.pub");
    let f = fs::File::create(&huge).unwrap();
    std::io::Write::write_all(&mut &f, &vec![b'A'; 10 << 20]).unwrap();
    drop(f);
    chmod(&huge, 0o644);
    let out = verify(&dir, &[]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(out.error(), Some("limit.input_too_large"), "{}", out.stderr);
    let out = verify(&dir, &["--insecure-trust-store"]);
    assert_eq!(out.error(), Some("limit.input_too_large"), "{}", out.stderr);
    assert_eq!(
        TrustStore::load_with(&huge, TrustOptions { insecure: true })
            .err()
            .unwrap()
            .code,
        Code::InputTooLarge
    );
}

#[test]
fn insecure_trust_store_accepts_a_world_writable_dir_and_warns() {
    let d = TempDir::new("insecure");
    let open = d.dir("open", 0o777);
    signer_in(&open, "signer.pub", 0o666);
    assert_eq!(
        TrustStore::load(&open).err().unwrap().code,
        Code::TrustStorePermissions
    );
    assert_eq!(
        TrustStore::load_with(&open, TrustOptions { insecure: true })
            .unwrap()
            .len(),
        1
    );

    let warned = |out: &Out| {
        assert!(
            out.stderr.contains("warning: --insecure-trust-store")
                && out.stderr.contains("auth.trust_store_permissions"),
            "{}",
            out.stderr
        );
    };
    let out = verify(&open, &["--insecure-trust-store"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    warned(&out);
    let stream = signed_stream();
    let out = mdevmig(&[
        "inspect",
        s(&stream),
        "--trust",
        s(&open),
        "--insecure-trust-store",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("VERIFIED"), "{}", out.stdout);
    warned(&out);
    let out = mdevmig(&["inspect", s(&stream), "--trust", s(&open)]);
    assert_eq!(
        out.error(),
        Some("auth.trust_store_permissions"),
        "{}",
        out.stderr
    );

    // restore: a stream saved from a simulated mtty, its key in the open directory.
    assert_eq!(keygen(&d.join("k"), &[]).code, Some(0));
    fs::rename(d.join("k.pub"), open.join("k.pub")).unwrap();
    let saved = d.join("s.mdm");
    let out = mdevmig(&[
        "save",
        "--device",
        "sim:mtty/mtty-2,seed=3",
        "--key",
        s(&d.join("k.key")),
        "-o",
        s(&saved),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--device",
            "sim:mtty/mtty-2,seed=9",
            "--trust",
            s(&open),
            "-i",
            s(&saved),
        ];
        args.extend_from_slice(extra);
        mdevmig(&args)
    };
    let out = restore(&[]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert_eq!(
        out.error(),
        Some("auth.trust_store_permissions"),
        "{}",
        out.stderr
    );
    let out = restore(&["--insecure-trust-store"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    warned(&out);
}
