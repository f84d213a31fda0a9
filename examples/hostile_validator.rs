//! A validator whose only plugin misbehaves on purpose: the containment tests
//! (`tests/sandbox.rs`) run it as the sandboxed child. Section names choose the
//! misbehaviour: `hostile.panic`, `hostile.loop`, `hostile.alloc`, `hostile.open`
//! (a system call outside the policy); any other section validates fine.

use std::collections::BTreeMap;

use mdevmig_plugin_api::{
    DeviceInfo, SectionKind, SectionLayout, SectionSpec, VendorError, VendorPlugin, VersionWindow,
};

struct Hostile;

impl VendorPlugin for Hostile {
    fn vendor(&self) -> &'static str {
        "hostile"
    }
    fn plugin_version(&self) -> &'static str {
        "0"
    }
    fn device_types(&self) -> &'static [&'static str] {
        &["evil"]
    }
    fn produces(&self, _: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }
    fn loads(&self, _: &str) -> Option<VersionWindow> {
        Some(VersionWindow::new(1, 1))
    }
    fn configure(
        &self,
        _: &str,
        a: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, VendorError> {
        Ok(a.clone())
    }
    fn sections(&self, _: &DeviceInfo, _: u32) -> Result<Vec<SectionSpec>, VendorError> {
        Ok(Vec::new())
    }
    fn layout(&self, _: &DeviceInfo, _: u32, _: u64) -> Result<Vec<SectionLayout>, VendorError> {
        Ok(Vec::new())
    }
    fn validate_section(&self, _: &DeviceInfo, spec: &SectionSpec, data: &[u8]) -> Result<(), VendorError> {
        let _ = SectionKind::Structured;
        match spec.name.as_str() {
            "hostile.panic" => panic!("parser bug on {} bytes", data.len()),
            "hostile.loop" => loop {
                std::hint::spin_loop();
            },
            "hostile.alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 64 << 20]);
                }
            }
            "hostile.open" => {
                let _ = std::fs::File::open("/etc/hostname");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let registry = mdevmig::plugins::Registry::with(vec![Box::new(Hostile)]);
    std::process::exit(i32::from(mdevmig::sandbox::child_main(
        &registry,
        num(2, 512 << 20),
        num(3, 30),
    )));
}
