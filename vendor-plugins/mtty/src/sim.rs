//! A simulated mtty device for the broker's `sim` backend: the same bytes the
//! kernel driver produces and loads, with the driver's own behaviour at the
//! migration boundaries (PRE_COPY hands out the 24-byte header first; a load is
//! checked at RESUMING to STOP).

use mdevmig_plugin_api::sim::SimModel;
use mdevmig_plugin_api::{SimOptions, VendorError};
use sha2::{Digest, Sha256};

use crate::format::{MttyState, MttyType, HEADER_LEN};

/// Largest raw stream a load accepts (the driver's buffer is sized for two ports).
const MAX_LOAD: usize = crate::format::MAX_STATE_LEN;

/// A simulated mtty device.
pub struct MttySim {
    ty: MttyType,
    state: MttyState,
    snapshot: Vec<u8>,
    loading: Vec<u8>,
}

impl MttySim {
    /// A device of `ty`: a fresh device for seed 0, otherwise a busy one (scratch
    /// registers and loopback FIFO contents derived from the seed).
    pub fn new(ty: MttyType, opts: &SimOptions) -> Self {
        let mut state = if opts.seed == 0 {
            MttyState::default_for(ty)
        } else {
            MttyState::busy_for(ty)
        };
        if opts.seed != 0 {
            let seed = opts.seed.to_le_bytes();
            for (i, port) in state.ports_mut().iter_mut().enumerate() {
                let b = seed.get(i).copied().unwrap_or(0);
                port.guest_write(crate::uart::UART_SCR, b);
            }
        }
        let snapshot = state.to_bytes();
        MttySim {
            ty,
            state,
            snapshot,
            loading: Vec::new(),
        }
    }
}

impl SimModel for MttySim {
    fn raw_len(&self) -> u64 {
        u64::try_from(self.ty.state_len()).unwrap_or(0)
    }

    fn begin_save(&mut self) {
        self.snapshot = self.state.to_bytes();
    }

    fn read_raw(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(offset) = usize::try_from(offset) else {
            return 0;
        };
        let src = self.snapshot.get(offset..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    }

    fn precopy_len(&self) -> u64 {
        u64::try_from(HEADER_LEN).unwrap_or(0)
    }

    fn begin_load(&mut self) {
        self.loading.clear();
    }

    fn load_data(&mut self, data: &[u8]) -> Result<(), VendorError> {
        if self.loading.len().saturating_add(data.len()) > MAX_LOAD {
            return Err(VendorError::new(
                crate::codes::BAD_LENGTH,
                "more data than an mtty state holds",
            ));
        }
        self.loading.extend_from_slice(data);
        Ok(())
    }

    fn end_load(&mut self) -> Result<(), VendorError> {
        // What the driver checks: the header and exact size for its port count.
        let loaded = MttyState::parse(&self.loading)?;
        if loaded.mtty_type() != self.ty {
            return Err(VendorError::new(
                crate::codes::PORT_COUNT,
                "state for another port count",
            ));
        }
        self.state = loaded;
        self.loading.clear();
        Ok(())
    }

    fn abort_load(&mut self) {
        self.loading.clear();
    }

    fn digest(&mut self) -> [u8; 32] {
        Sha256::digest(self.state.to_bytes()).into()
    }
}

impl mdevmig_plugin_api::SimProvider for crate::MttyPlugin {
    fn sim_model(&self, device_type: &str, opts: &SimOptions) -> Result<Box<dyn SimModel>, VendorError> {
        let ty = MttyType::from_device_type(device_type).ok_or_else(|| {
            VendorError::new(
                crate::codes::DEVICE_TYPE,
                format!("unknown mtty type {device_type:?}"),
            )
        })?;
        Ok(Box::new(MttySim::new(ty, opts)))
    }
}
