//! Filled in by the pipelines work (config file).
