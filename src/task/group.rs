//! TaskGroup (being written)
