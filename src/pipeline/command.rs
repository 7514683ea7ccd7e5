//! Filled in by the pipelines work (command).
