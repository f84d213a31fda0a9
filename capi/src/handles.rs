//! The handle table: what C holds is a number, never a pointer.
//!
//! Handles count up from a per-process random start and are never reused, so a
//! freed or made-up handle finds nothing. Contexts and devices live in separate
//! maps, so a handle of one kind passed as the other finds nothing too. Each
//! entry has its own lock: calls on one handle are serialized, calls on
//! different handles are not.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use mdevmig_core::broker::region::MigrationRegion;
use mdevmig_core::compat::Policy;
use mdevmig_core::plugins::Registry;
use mdevmig_core::sandbox::{SandboxConfig, Validation};
use mdevmig_core::{Error, SigningKeyPair, TrustStore};

/// A handle as C passes it; 0 is never issued.
pub type Handle = u64;

/// A failure's stable code and message.
#[derive(Debug, Clone, Default)]
pub struct LastError {
    pub code: String,
    pub message: String,
}

impl LastError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        LastError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn of(e: &Error) -> Self {
        LastError::new(e.code.as_str(), e.message.clone())
    }

    pub fn none() -> Self {
        LastError::default()
    }
}

/// A context: what saves and restores need.
pub struct Ctx {
    pub registry: Arc<Registry>,
    pub key: Option<Arc<SigningKeyPair>>,
    pub trust: Option<Arc<TrustStore>>,
    pub session: Option<[u8; 32]>,
    pub policy: Policy,
    pub validation: Validation,
    pub last: LastError,
}

impl Ctx {
    pub fn new() -> Self {
        Ctx {
            registry: Arc::new(Registry::builtin()),
            key: None,
            trust: None,
            session: None,
            policy: Policy::default(),
            validation: default_validation(),
            last: LastError::none(),
        }
    }
}

/// A sandbox whose child is `mdevmig-validator`: next to the running program if
/// it is there, else by name on `PATH`. (The running program is the VMM, which
/// cannot be the validator.)
fn default_validation() -> Validation {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("mdevmig-validator")))
        .filter(|p| p.is_file());
    let program = beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("mdevmig-validator"))
                .find(|p| p.is_file())
        })
    });
    Validation::Sandbox(SandboxConfig {
        program: Some(program.unwrap_or_else(|| "mdevmig-validator".into())),
        ..SandboxConfig::default()
    })
}

/// A device: its migration region.
pub struct Dev {
    pub region: MigrationRegion,
    pub registry: Arc<Registry>,
    pub last: LastError,
}

#[derive(Default)]
struct Table {
    ctxs: HashMap<Handle, Arc<Mutex<Ctx>>>,
    devs: HashMap<Handle, Arc<Mutex<Dev>>>,
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE
        .get_or_init(|| Mutex::new(Table::default()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn next_handle() -> Handle {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        // A random start (below 2^48, so the count never wraps to 0): a handle
        // from another process or an earlier run is unlikely to be valid here.
        let mut b = [0u8; 8];
        for (i, x) in mdevmig_core::auth::new_session_nonce().iter().take(6).enumerate() {
            if let Some(slot) = b.get_mut(i) {
                *slot = *x;
            }
        }
        AtomicU64::new(u64::from_le_bytes(b) | 1)
    });
    next.fetch_add(1, Ordering::Relaxed)
}

pub fn insert_ctx(c: Ctx) -> Handle {
    let h = next_handle();
    table().ctxs.insert(h, Arc::new(Mutex::new(c)));
    h
}

pub fn insert_dev(d: Dev) -> Handle {
    let h = next_handle();
    table().devs.insert(h, Arc::new(Mutex::new(d)));
    h
}

pub fn ctx(h: Handle) -> Option<Arc<Mutex<Ctx>>> {
    table().ctxs.get(&h).cloned()
}

pub fn dev(h: Handle) -> Option<Arc<Mutex<Dev>>> {
    table().devs.get(&h).cloned()
}

pub fn remove_ctx(h: Handle) -> Option<Arc<Mutex<Ctx>>> {
    table().ctxs.remove(&h)
}

/// Removes a device and drops it once no call holds it (a region dropped
/// mid-migration abandons its job).
pub fn remove_dev(h: Handle) -> Option<()> {
    let d = table().devs.remove(&h)?;
    // Wait for a call in progress on another thread, then drop.
    drop(d.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    drop(d);
    Some(())
}

thread_local! {
    static THREAD_LAST: RefCell<LastError> = RefCell::new(LastError::none());
}

/// Records `e` as the calling thread's last error.
pub fn set_thread_error(e: LastError) {
    THREAD_LAST.with(|t| *t.borrow_mut() = e);
}

/// Records `e` as `h`'s last error, or the thread's when `h` is no live handle.
pub fn set_last_error(h: Handle, e: LastError) {
    if let Some(d) = dev(h) {
        d.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last = e;
        return;
    }
    if let Some(c) = ctx(h) {
        c.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last = e;
        return;
    }
    THREAD_LAST.with(|t| *t.borrow_mut() = e);
}

/// `h`'s last error (the thread's for 0); `None` for an unknown handle.
pub fn last_error(h: Handle) -> Option<LastError> {
    if h == 0 {
        return Some(THREAD_LAST.with(|t| t.borrow().clone()));
    }
    if let Some(d) = dev(h) {
        return Some(
            d.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .last
                .clone(),
        );
    }
    ctx(h).map(|c| {
        c.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last
            .clone()
    })
}
