//! Helpers shared by the model's integration tests.
//!
//! Each test crate uses a different part of it, so unused items are expected.
#![allow(dead_code)]

pub mod world;
