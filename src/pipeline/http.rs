//! Filled in by the pipelines work (http).
