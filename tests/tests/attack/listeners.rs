//! Attacks on this surface; see `main.rs`.
