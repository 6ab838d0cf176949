//! What every test shares: its keyspaces, and stores from the testing kit
//! (`engine::testing::TestStore`) that can be closed and reopened.

pub use engine::testing::TestStore;

/// The keyspaces every test declares.
pub const KEYSPACES: &[&str] = &["alpha", "beta"];
