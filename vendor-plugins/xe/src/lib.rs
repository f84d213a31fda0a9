//! Intel Xe VF migration packets (placeholder while the crate is written).
