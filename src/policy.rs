//! The policy engine (SPEC §5): every planned action is checked in a fixed order and the
//! first policy that blocks decides.
