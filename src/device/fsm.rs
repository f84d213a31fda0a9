//! The VFIO migration v2 state machine, exactly as the kernel's
//! `vfio_mig_get_next_state()` (drivers/vfio/vfio_main.c) walks it.
//!
//! A device supports a set of migration flags (STOP_COPY always; P2P and PRE_COPY
//! optionally). A request to go from `cur` to `target` is served one arc at a time:
//! the next step is `FROM_FSM[cur][target]`, re-stepped while the device lacks the
//! flags that step's state needs; landing on ERROR means the request is invalid
//! (EINVAL). A target whose flags the device lacks is invalid before any step.
//!
//! ```text
//!             RUNNING ──── PRE_COPY              (PRE_COPY needs flag PRE_COPY)
//!                │             │
//!           RUNNING_P2P ── PRE_COPY_P2P         (*_P2P need flag P2P)
//!                │             │
//!   RESUMING ── STOP ──── STOP_COPY
//! ```

use std::fmt;

/// `VFIO_MIGRATION_STOP_COPY`.
pub const FLAG_STOP_COPY: u64 = 1 << 0;
/// `VFIO_MIGRATION_P2P`.
pub const FLAG_P2P: u64 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`.
pub const FLAG_PRE_COPY: u64 = 1 << 2;

/// `enum vfio_device_mig_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum MigState {
    /// 0: the device failed; only a reset leaves it.
    Error = 0,
    /// 1: stopped, not saving or loading.
    Stop = 1,
    /// 2: running normally.
    Running = 2,
    /// 3: stopped, the data fd yields the final state.
    StopCopy = 3,
    /// 4: stopped, the data fd takes a state to load.
    Resuming = 4,
    /// 5: running but not initiating peer-to-peer DMA.
    RunningP2p = 5,
    /// 6: running, the data fd yields state ahead of STOP_COPY.
    PreCopy = 6,
    /// 7: PRE_COPY without peer-to-peer DMA.
    PreCopyP2p = 7,
}

impl MigState {
    /// All states, by value.
    pub const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    /// From the uAPI value.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_u32() == v)
    }

    /// The uAPI value.
    pub fn as_u32(self) -> u32 {
        match self {
            MigState::Error => 0,
            MigState::Stop => 1,
            MigState::Running => 2,
            MigState::StopCopy => 3,
            MigState::Resuming => 4,
            MigState::RunningP2p => 5,
            MigState::PreCopy => 6,
            MigState::PreCopyP2p => 7,
        }
    }

    fn idx(self) -> usize {
        usize::try_from(self.as_u32()).unwrap_or(0)
    }

    /// Flags a device needs to support this state (`state_flags_table`).
    pub fn required_flags(self) -> u64 {
        match self {
            MigState::Stop | MigState::Running | MigState::StopCopy | MigState::Resuming => FLAG_STOP_COPY,
            MigState::PreCopy => FLAG_STOP_COPY | FLAG_PRE_COPY,
            MigState::PreCopyP2p => FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
            MigState::RunningP2p => FLAG_STOP_COPY | FLAG_P2P,
            MigState::Error => u64::MAX,
        }
    }

    /// True for the states with a data stream (the kernel hands out a data fd).
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            MigState::StopCopy | MigState::Resuming | MigState::PreCopy | MigState::PreCopyP2p
        )
    }

    /// True for the states in which the device runs (the VM's vCPUs may touch it).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            MigState::Running | MigState::RunningP2p | MigState::PreCopy | MigState::PreCopyP2p
        )
    }
}

impl fmt::Display for MigState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            MigState::Error => "ERROR",
            MigState::Stop => "STOP",
            MigState::Running => "RUNNING",
            MigState::StopCopy => "STOP_COPY",
            MigState::Resuming => "RESUMING",
            MigState::RunningP2p => "RUNNING_P2P",
            MigState::PreCopy => "PRE_COPY",
            MigState::PreCopyP2p => "PRE_COPY_P2P",
        };
        f.write_str(s)
    }
}

use MigState::{
    Error as E, PreCopy as PC, PreCopyP2p as PP, Resuming as RS, Running as RU, RunningP2p as RP, Stop as ST,
    StopCopy as SC,
};

/// `vfio_from_fsm_table`, indexed `[cur][target]` by uAPI value
/// (ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P).
const FROM_FSM: [[MigState; 8]; 8] = [
    /* ERROR        */ [E, E, E, E, E, E, E, E],
    /* STOP         */ [E, ST, RP, SC, RS, RP, RP, RP],
    /* RUNNING      */ [E, RP, RU, RP, RP, RP, PC, RP],
    /* STOP_COPY    */ [E, ST, ST, SC, ST, ST, E, E],
    /* RESUMING     */ [E, ST, ST, ST, RS, ST, ST, ST],
    /* RUNNING_P2P  */ [E, ST, RU, ST, ST, RP, RU, PP],
    /* PRE_COPY     */ [E, RU, RU, PP, RU, RU, PC, PP],
    /* PRE_COPY_P2P */ [E, RP, RP, SC, RP, RP, PC, PP],
];

fn supported(flags: u64, s: MigState) -> bool {
    s.required_flags() & flags == s.required_flags()
}

/// The next arc from `cur` toward `target` for a device with `flags`, or None
/// when the kernel would return EINVAL.
pub(crate) fn next_step(flags: u64, cur: MigState, target: MigState) -> Option<MigState> {
    if !supported(flags, cur) || !supported(flags, target) {
        return None;
    }
    let row = FROM_FSM.get(cur.idx())?;
    let mut next = *row.get(target.idx())?;
    // The kernel loops while the step is unsupported; ERROR (which needs every
    // flag) is never supported, so before the 2026 fix ("vfio: stop at ERROR in
    // vfio_mig_get_next_state") STOP_COPY -> PRE_COPY spun forever in the kernel.
    // We stop at ERROR as the fixed kernel does; the broker never asks a real
    // device for that transition.
    while next != MigState::Error && !supported(flags, next) {
        next = *FROM_FSM.get(next.idx())?.get(target.idx())?;
    }
    (next != MigState::Error).then_some(next)
}

/// The whole sequence of arcs from `cur` to `target` (empty when equal), or None
/// when the request is invalid.
pub(crate) fn path(flags: u64, cur: MigState, target: MigState) -> Option<Vec<MigState>> {
    let mut steps = Vec::new();
    let mut at = cur;
    while at != target {
        let n = next_step(flags, at, target)?;
        steps.push(n);
        at = n;
        if steps.len() > 8 {
            return None;
        }
    }
    if cur == target && !supported(flags, cur) {
        return None;
    }
    Some(steps)
}

/// Something that moves through the v2 states one arc at a time, the way the
/// kernel's `vfio_mig_get_next_state()` walks them: the simulated and file
/// devices and the broker's migration region. [`walk`] is the one walk they share.
pub(crate) trait Arcs {
    /// The `VFIO_DEVICE_FEATURE_MIGRATION` flags that decide which arcs exist.
    fn arc_flags(&self) -> u64;
    /// The state now.
    fn current(&self) -> MigState;
    /// Records the state reached (ERROR after a failed arc).
    fn enter(&mut self, state: MigState);
    /// Performs the single arc `from` -> `to`.
    fn take_arc(&mut self, from: MigState, to: MigState) -> crate::Result<()>;
    /// Cleans up after the arc out of `from` failed (the state is ERROR).
    fn arc_failed(&mut self, _from: MigState) {}
}

/// Moves `dev` to `target` arc by arc. A request the flags do not allow is
/// `device.transition` and changes nothing, as the kernel's EINVAL does; a
/// failed arc leaves `dev` in ERROR, as the kernel does.
pub(crate) fn walk<A: Arcs + ?Sized>(dev: &mut A, target: MigState) -> crate::Result<()> {
    let start = dev.current();
    let steps = path(dev.arc_flags(), start, target).ok_or_else(|| {
        crate::Error::new(
            crate::Code::DeviceTransition,
            format!("{start} -> {target} is not a valid transition (EINVAL)"),
        )
    })?;
    for next in steps {
        let from = dev.current();
        if let Err(e) = dev.take_arc(from, next) {
            dev.enter(MigState::Error);
            dev.arc_failed(from);
            return Err(e);
        }
        dev.enter(next);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAG_SETS: [u64; 4] = [
        FLAG_STOP_COPY,
        FLAG_STOP_COPY | FLAG_P2P,
        FLAG_STOP_COPY | FLAG_PRE_COPY,
        FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
    ];

    /// The arcs the kernel documents as mandatory for each flag combination
    /// (include/uapi/linux/vfio.h, "The supported arcs are").
    fn documented_arcs(flags: u64) -> Vec<(MigState, MigState)> {
        let p2p = flags & FLAG_P2P != 0;
        let pre = flags & FLAG_PRE_COPY != 0;
        let mut arcs = vec![(ST, RS), (RS, ST), (ST, SC), (SC, ST)];
        if p2p {
            arcs.extend([(RU, RP), (RP, RU), (RP, ST), (ST, RP)]);
        } else {
            arcs.extend([(RU, ST), (ST, RU)]);
        }
        if pre {
            arcs.extend([(RU, PC), (PC, RU), (PC, SC)]);
        }
        if pre && p2p {
            arcs.extend([(PC, PP), (PP, PC), (PP, RP), (PP, SC), (RP, PP)]);
        }
        if pre && p2p {
            // With P2P, PRE_COPY -> STOP_COPY goes through PRE_COPY_P2P.
            arcs.retain(|a| *a != (PC, SC));
        }
        arcs
    }

    #[test]
    fn every_pair_for_every_flag_set_follows_only_documented_arcs() {
        for flags in FLAG_SETS {
            let arcs = documented_arcs(flags);
            for cur in MigState::ALL {
                for target in MigState::ALL {
                    let valid_ends = supported(flags, cur) && supported(flags, target) && target != E;
                    match path(flags, cur, target) {
                        Some(p) => {
                            assert!(valid_ends, "flags {flags:#x}: {cur}->{target} should be refused");
                            let mut at = cur;
                            for s in &p {
                                assert!(
                                    arcs.contains(&(at, *s)),
                                    "flags {flags:#x}: {cur}->{target} uses undocumented arc {at}->{s}"
                                );
                                // Saving states are never interior steps.
                                if *s != target {
                                    assert!(
                                        !matches!(s, SC | PC | PP | RS) || (*s == PP && target == SC),
                                        "{cur}->{target} passes through {s}"
                                    );
                                }
                                at = *s;
                            }
                            assert_eq!(at, target);
                        }
                        None => {
                            let stop_copy_to_precopy = matches!(cur, SC) && matches!(target, PC | PP);
                            assert!(
                                !valid_ends || stop_copy_to_precopy || cur == E,
                                "flags {flags:#x}: {cur}->{target} refused"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn stop_copy_never_returns_to_pre_copy() {
        for flags in FLAG_SETS {
            assert_eq!(path(flags, SC, PC), None);
            assert_eq!(path(flags, SC, PP), None);
        }
    }

    #[test]
    fn error_is_a_sink_and_never_a_target() {
        for flags in FLAG_SETS {
            for s in MigState::ALL {
                assert_eq!(next_step(flags, E, s), None);
                assert_eq!(next_step(flags, s, E), None);
            }
        }
    }

    #[test]
    fn known_paths() {
        let all = FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY;
        assert_eq!(path(all, RU, SC).unwrap(), vec![RP, ST, SC]);
        assert_eq!(path(all, PC, SC).unwrap(), vec![PP, SC]);
        assert_eq!(path(all, RU, RS).unwrap(), vec![RP, ST, RS]);
        assert_eq!(path(FLAG_STOP_COPY, RU, RS).unwrap(), vec![ST, RS]);
        assert_eq!(path(FLAG_STOP_COPY | FLAG_PRE_COPY, PC, SC).unwrap(), vec![SC]);
        assert_eq!(path(FLAG_STOP_COPY, RU, PC), None);
    }
}
