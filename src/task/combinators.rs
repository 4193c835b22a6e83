//! gather, wait, as_completed, shield (being written)
